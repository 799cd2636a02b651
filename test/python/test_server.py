"""The rollout server through real sockets and processes: the client returns the CLI's tokens, bad
input gets an error and the server keeps serving (and stays exact), lost clients free their requests,
nothing is dropped at high-water marks, pause/bump/resume sequence weight versions, and shutdown
ends every request."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from conftest import ROOT, Server, cli_rollout, wait_until
from specactor import wire
from specactor.client import AsyncRolloutClient, RolloutClient, ServerError
from specactor.sampling import derive_seed

PROMPTS = [[1, 17, 42, 99, 7], [5, 6, 7, 5, 6, 7], [1, 300, 301]]
FAST = ("--heartbeat-interval", "0.2", "--client-timeout", "1.5")


@pytest.fixture(scope="module")
def server(tiny_dir):
    with Server(tiny_dir, "--max-batch", "8", "--max-message-bytes", "65536", *FAST) as s:
        yield s


class Raw:
    """A bare DEALER for what the client library would never send."""

    def __init__(self, address: str, **opts: int) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        for k, v in opts.items():
            self.sock.setsockopt(getattr(zmq, k), v)
        self.sock.connect(address)

    def send(self, type_: str, body: dict, arrays: dict | None = None) -> None:
        self.sock.send_multipart(wire.encode(type_, body, arrays))

    def send_frames(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout: float = 20) -> wire.Message:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply")
        return wire.decode(self.sock.recv_multipart())

    def close(self) -> None:
        self.sock.close()


def generate_body(rid: str, prompts: list[list[int]], **kw) -> tuple[dict, dict]:
    body = {"id": rid, "prompt_lengths": [len(p) for p in prompts], "max_tokens": 16, **kw}
    return body, {"prompt_ids": np.concatenate([np.asarray(p, np.int32) for p in prompts])}


def cli_tokens(tiny_dir, tmp_path, seed: int, n: int, max_tokens: int, *args: str) -> list[list[int]]:
    rows = [{"prompt_ids": p} for p in PROMPTS]
    common = ("--n", str(n), "--max-tokens", str(max_tokens), "--seed", str(seed), *args)
    raw, _ = cli_rollout(tiny_dir, rows, tmp_path, f"cli{seed}", *common)
    return [json.loads(line)["token_ids"] for line in raw.splitlines()]


def flat(results) -> list[list[int]]:
    return [r.token_ids for per_prompt in results for r in per_prompt]


def test_client_returns_the_cli_tokens(server, tiny_dir, tmp_path):
    sampling = ("--temperature", "0.8", "--top-p", "0.9", "--top-k", "50")
    expected = cli_tokens(tiny_dir, tmp_path, 21, 2, 24, *sampling)
    with RolloutClient(server.address) as c:
        assert c.welcome["protocol"] == 1 and c.welcome["model"]["name"] == "tiny"
        res = c.generate(PROMPTS, n=2, max_tokens=24, temperature=0.8, top_p=0.9, top_k=50, seed=21)
        assert flat(res) == expected
        r = res[1][1]
        assert (
            r.finish_reason in ("stop", "length")
            and r.weight_version == 0
            and len(r.log_probs) == len(r.token_ids)
        )
        assert all(lp <= 0 for lp in r.log_probs)
        # no seed: a fresh one per call, reported per sample
        a, b = c.generate(PROMPTS[:1], max_tokens=8), c.generate(PROMPTS[:1], max_tokens=8)
        assert a[0][0].seed != b[0][0].seed


@pytest.mark.parametrize("drafter", ["suffix", "model", "decoupled"])
def test_a_speculative_server_returns_plain_tokens(tiny_dir, tmp_path, drafter):
    drafter_name = drafter
    expected = cli_tokens(tiny_dir, tmp_path, 9, 3, 40, "--temperature", "0.7")
    decoupled = drafter == "decoupled"  # the model drafter running ahead on a thread of its own
    vanilla = (
        "--mode",
        "decoupled" if decoupled else "vanilla",
        "--drafter",
        "model" if decoupled else drafter,
        "--draft-len",
        "4",
        "--drafter-model",
        str(tiny_dir),
        "--draft-cost",
        "off",  # the policy as its own drafter: keep its chains long
    )
    with Server(tiny_dir, *vanilla, *FAST) as s, RolloutClient(s.address) as c:
        for _ in range(2):  # the second round drafts from the first one's history
            assert flat(c.generate(PROMPTS, n=3, max_tokens=40, temperature=0.7, seed=9)) == expected
        drafter = c.stats()["drafter"]
    assert drafter["errors"] == 0
    if not decoupled:  # tiny's drafter seldom gets ahead of tiny (speculation.test.ts slows its verifier)
        assert drafter["verify_steps"] > 0 and drafter["accepted_tokens"] > 0
    if drafter_name != "suffix":
        assert set(drafter["metrics"]) == {"acceptance", "cost"}


def test_bad_input_gets_an_error_and_the_server_stays_exact(server, tiny_dir, tmp_path):
    raw = Raw(server.address)
    cases: list[tuple[object, str]] = [
        ([b"generate"], "bad_frame"),
        ([b"\xff\xfe", b"\x80"], "bad_frame"),
        ([b"launch", msgpack.packb({})], "unknown_type"),
        ([b"generate", b"\xc1\xc1"], "bad_message"),
        ([b"generate", msgpack.packb([1, 2])], "bad_message"),
        (("generate", *generate_body("t1", PROMPTS, max_tokens="ten")), "bad_message"),
        (("generate", *generate_body("t2", PROMPTS, temperature=-1)), "bad_message"),
        (("generate", *generate_body("t3", PROMPTS, prompt_lengths=[1, 2])), "bad_message"),
        (("generate", *generate_body("t4", [[1, 2, 100000]])), "invalid_request"),
        (("generate", *generate_body("t5", [[1] * 1000], max_tokens=100)), "invalid_request"),
        (("hello", {"protocol": 2}, None), "version_mismatch"),
        (("bump", {}, None), "not_paused"),
        ([b"ping", msgpack.packb({"t": "x" * 70000})], "too_large"),
    ]
    for msg, code in cases:
        if isinstance(msg, list):
            raw.send_frames(msg)
        else:
            raw.send(*msg)
        reply = raw.recv()
        assert reply.type == "error" and reply.body["code"] == code, (msg, reply.body)
        assert reply.body["message"]
    # a duplicate id while the first is in flight, and aborts of unknown ids (idempotent, no error)
    raw.send("generate", *generate_body("dup", PROMPTS, max_tokens=200))
    raw.send("generate", *generate_body("dup", PROMPTS))
    raw.send("abort", {"ids": ["dup", "never-sent"]})
    raw.send("abort", {"ids": ["dup"]})
    got = [raw.recv() for _ in range(4)]
    assert got[0].type == "accepted"
    assert got[1].type == "error" and got[1].body["code"] == "duplicate_id" and got[1].body["id"] == "dup"
    aborted = [m.body for m in got if m.type == "aborted"]
    assert aborted[0] == {"ids": ["dup"], "unknown": ["never-sent"]}
    finals = [e for m in got if m.type == "outputs" for e in m.body["outputs"]]
    while sum(e["finished"] for e in finals) < 3 or len(aborted) < 2:
        m = raw.recv()
        if m.type == "outputs":
            finals += m.body["outputs"]
        elif m.type == "aborted":
            aborted.append(m.body)
    # idempotent: in flight until its samples leave the engine step they are in, unknown after
    assert aborted[1]["ids"] + aborted[1]["unknown"] == ["dup"]
    assert sorted(e["finish_reason"] for e in finals if e["finished"]) == ["abort"] * 3
    raw.close()
    expected = cli_tokens(tiny_dir, tmp_path, 5, 1, 16)
    with RolloutClient(server.address) as c:
        assert flat(c.generate(PROMPTS, max_tokens=16, seed=5)) == expected
        assert c.stats()["bad_messages"] >= 9  # the undecodable ones above


def test_streaming_deltas_add_up_to_the_result(server):
    async def run():
        async with AsyncRolloutClient(server.address) as c:
            plain = await c.generate(PROMPTS, n=2, max_tokens=20, seed=8)
            parts: dict[tuple[int, int], list[int]] = {}
            finals = {}
            async for prompt, sample, new_tokens, final in c.generate_stream(
                PROMPTS, n=2, max_tokens=20, seed=8
            ):
                parts.setdefault((prompt, sample), []).extend(new_tokens)
                if final is not None:
                    finals[(prompt, sample)] = final
            return plain, parts, finals

    plain, parts, finals = asyncio.run(run())
    for j, per_prompt in enumerate(plain):
        for i, r in enumerate(per_prompt):
            assert parts[(j, i)] == r.token_ids == finals[(j, i)].token_ids


def test_a_client_that_dies_has_its_requests_aborted(tiny_dir):
    script = (
        "import sys, time\n"
        "from specactor.client import RolloutClient\n"
        "c = RolloutClient(sys.argv[1])\n"
        "import threading\n"
        "threading.Thread(target=c.generate, args=([[1, 2, 3]] * 6,), kwargs={'n': 4, 'max_tokens': 900},"
        " daemon=True).start()\n"
        "time.sleep(0.5)\n"
        "print('sent', flush=True)\n"
        "time.sleep(60)\n"
    )
    with Server(tiny_dir, *FAST) as server, RolloutClient(server.address) as c:
        before = c.stats()
        child = subprocess.Popen(
            [sys.executable, "-c", script, server.address], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "sent"
        busy = c.stats()
        assert busy["running"] + busy["queued"] > 0
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            s = c.stats()
            if s["clients_lost"] > before["clients_lost"] and s["running"] == 0 and s["queued"] == 0:
                break
            time.sleep(0.2)
        assert s["clients_lost"] == before["clients_lost"] + 1
        assert s["running"] == 0 and s["queued"] == 0 and s["in_flight_requests"] == 0
        assert s["requests_aborted"] > before["requests_aborted"]


def test_nothing_is_dropped_at_the_high_water_mark(tiny_dir):
    # Small queues and kernel buffers at both ends, so that what the tiny model streams (about 300
    # messages) cannot all fit in them on any machine: the rest must wait in the server's backlog.
    small = ("--max-batch", "16", "--send-hwm", "2", "--send-buffer", "4096")
    with Server(tiny_dir, *small, *FAST) as s, RolloutClient(s.address) as watcher:
        raw = Raw(s.address, RCVHWM=1, RCVBUF=4096)
        raw.send("hello", {"protocol": 1})
        assert raw.recv().type == "welcome"
        raw.send(
            "generate", *generate_body("flood", [[1, 2, 3]] * 8, n=2, max_tokens=300, stream=True, seed=3)
        )
        deadline = time.time() + 30
        while time.time() < deadline:  # heartbeats, but no reading, until every sample has finished
            raw.send("ping", {})
            busy = watcher.stats()
            if busy["engine_steps"] > 0 and busy["running"] == 0 and busy["queued"] == 0:
                break
            time.sleep(0.2)
        assert busy["backlog_peak"] > 1, busy
        tokens: dict[tuple[int, int], list[int]] = {}
        finished = 0
        while finished < 16:
            m = raw.recv()
            if m.type == "outputs":
                at = 0
                for e in m.body["outputs"]:
                    n = e["num_tokens"]
                    tokens.setdefault((e["prompt"], e["sample"]), []).extend(
                        m.body["token_ids"][at : at + n].tolist()
                    )
                    at += n
                    finished += e["finished"]
        raw.send("stats", {})
        while (m := raw.recv()).type != "stats":
            pass
        assert m.body["backlog_peak"] > 1 and m.body["clients_lost"] == 0
        raw.close()
        with RolloutClient(s.address) as c:  # every streamed token arrived, in order
            again = c.generate([[1, 2, 3]] * 8, n=2, max_tokens=300, seed=3)
        assert tokens == {(j, i): r.token_ids for j, per in enumerate(again) for i, r in enumerate(per)}


def test_pause_bump_resume_sequence_weight_versions(tiny_dir):
    with Server(tiny_dir, *FAST) as s, RolloutClient(s.address) as c:
        with pytest.raises(ServerError) as e:
            c.bump()
        assert e.value.code == "not_paused"
        assert c.pause() == 0 and c.health()["status"] == "paused"
        out: list = []
        waiting = threading.Thread(target=lambda: out.append(c.generate(PROMPTS, max_tokens=8, seed=2)))
        waiting.start()
        wait_until(lambda: c.health()["queued"] == 3, "the request to be queued")
        assert not out  # accepted, but held while paused
        assert c.bump() == 1
        with pytest.raises(ServerError) as e:
            c.bump(1)
        assert e.value.code == "bad_version"
        assert c.resume() == 1
        waiting.join(30)
        assert [r.weight_version for r in out[0][0]] == [1]
        # pause with abort ends running samples at once
        longer = threading.Thread(
            target=lambda: out.append(c.generate([[1, 2]], n=4, max_tokens=900, seed=3))
        )
        longer.start()
        wait_until(lambda: c.health()["running"] == 4, "the samples to run")
        c.pause("abort")
        longer.join(30)
        reasons = [r.finish_reason for r in out[1][0]]  # a sample may have hit EOS before the pause
        assert "abort" in reasons and set(reasons) <= {"abort", "stop"}
        assert all(len(r.token_ids) < 900 for r in out[1][0])
        c.resume()


@pytest.mark.parametrize("how", ["drain", "now", "sigterm"])
def test_shutdown_ends_every_request(tiny_dir, how):
    s = Server(tiny_dir, *FAST)
    try:
        with RolloutClient(s.address) as c:
            got: list = []

            def run() -> None:
                try:
                    got.append(c.generate(PROMPTS, n=8, max_tokens=1000, seed=4))
                except ServerError as e:
                    got.append(e)

            t = threading.Thread(target=run)
            t.start()
            time.sleep(0.3)
            if how == "sigterm":
                s.proc.send_signal(signal.SIGTERM)
            else:
                c.shutdown(drain=how == "drain")
            t.join(60)
            assert s.wait() == 0
        if how == "drain":
            assert all(r.finish_reason in ("stop", "length") for per in got[0] for r in per)
        else:
            assert isinstance(got[0], ServerError) and got[0].code == "shutting_down"
    finally:
        s.stop()


def test_two_thousand_concurrent_requests(tiny_dir):
    with Server(tiny_dir, "--max-batch", "256", *FAST) as s:

        async def run():
            async with AsyncRolloutClient(s.address) as c:
                t0 = time.perf_counter()
                calls = [c.generate([[1, 2 + i % 50, 3]], max_tokens=32, seed=i) for i in range(2000)]
                results = await asyncio.gather(*calls)
                return results, time.perf_counter() - t0, await c.stats()

        results, wall, stats = asyncio.run(run())
    assert len(results) == 2000
    assert all(len(r) == 1 and len(r[0]) == 1 and 1 <= len(r[0][0].token_ids) <= 32 for r in results)
    # each call got its own answer: the reported seed is the one its own seed derives
    assert [r[0][0].seed for r in results] == [derive_seed(i, 0, 0) for i in range(2000)]
    assert stats["requests_accepted"] == stats["requests_finished"] == 2000
    assert stats["requests_failed"] == stats["requests_aborted"] == 0
    assert stats["peak_batch"] >= 64, stats
    assert wall < 120, wall
    print(
        f"2000 requests in {wall:.1f}s, peak batch {stats['peak_batch']}, engine steps {stats['engine_steps']}"
    )


def test_the_server_answers_while_a_long_step_runs(smollm2_dir):
    """The engine runs on a thread of its own: a multi-second prefill does not stop pings."""
    prompts = [[1, *range(100 + i, 300 + i)] for i in range(16)]
    with Server(smollm2_dir, "--max-batch", "16", *FAST) as s, RolloutClient(s.address) as c:
        c.generate([[1, 2, 3]], max_tokens=2, seed=1)  # warm-up
        busy = threading.Thread(target=lambda: c.generate(prompts, max_tokens=2, seed=2))
        t0 = time.perf_counter()
        busy.start()
        worst = 0.0
        with RolloutClient(s.address) as probe:
            while busy.is_alive():
                worst = max(worst, probe.ping())
                time.sleep(0.05)
        step_s = time.perf_counter() - t0
    assert step_s > 1.5, "the prefill was too short to show anything"
    assert worst < 0.5, f"a ping waited {worst:.2f}s during a {step_s:.1f}s step"


def test_config_file_with_flags_over_it(tiny_dir, tmp_path):
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"client-timeout": 7, "heartbeat-interval": 0.5, "max-message-bytes": 12345}))
    with (
        Server(tiny_dir, "--config", str(cfg), "--heartbeat-interval", "0.25") as s,
        RolloutClient(s.address) as c,
    ):
        w = c.welcome
    assert (w["client_timeout_s"], w["heartbeat_interval_s"], w["max_message_bytes"]) == (7, 0.25, 12345)


def test_serve_rejects_bad_options(tiny_dir):
    for args, needle in [
        (("--address", "localhost:1"), "--address"),
        (("--max-batch", "0"), "--max-batch"),
        (("--mode", "vanilla"), "--drafter"),
        (
            ("--mode", "vanilla", "--drafter", "model", "--drafter-model", "layers8"),
            "(q8) nor a directory",
        ),
        # drafter workers run torch on the hf/ form, which the 8-bit copy does not have
        (
            ("--mode", "vanilla", "--drafter", "model", "--drafter-model", "q8", "--engine", "workers")
            + ("--drafter-workers", "1"),
            "a worker loads hf/",
        ),
    ]:
        p = subprocess.run(
            ["node", str(ROOT / "bin" / "specactor.js"), "serve", "--model", str(tiny_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1, p.stderr
