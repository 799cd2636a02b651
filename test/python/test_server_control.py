"""Server features the veRL integration needs, through real processes and sockets: per-request stop
tokens, top-k 0 as off, memory release and restore, clearing engine state, Prometheus metrics, and
the server following its parent process (and SIGTERM) out."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import CLI, ROOT, Server, wait_until
from specactor.client import AsyncRolloutClient, RolloutClient, ServerError

PROMPTS = [[1, 17, 42, 99, 7], [5, 6, 7, 5, 6, 7], [1, 300, 301]]
FAST = ("--heartbeat-interval", "0.2", "--client-timeout", "5", "--worker-timeout", "3")
ENGINES = {
    "onnx": (),
    "suffix": ("--mode", "vanilla", "--drafter", "suffix", "--draft-len", "6"),
    "workers": ("--engine", "workers", "--workers", "1"),
    "specactor": ("--mode", "specactor", "--drafters", "suffix,ngram,model"),
}


def test_specactor_server_returns_plain_tokens_and_reports_its_cost_model(tiny_dir):
    """--mode specactor behind the protocol: plain's tokens, and stats() carries the policy's figures."""
    kw = {"n": 2, "max_tokens": 32, "temperature": 1.0, "seed": 8}
    with Server(tiny_dir, *FAST) as s, RolloutClient(s.address) as c:
        plain = [r.token_ids for r in flat(c.generate(PROMPTS, **kw))]
    with Server(tiny_dir, *ENGINES["specactor"], *FAST) as s, RolloutClient(s.address) as c:
        for _ in range(2):  # the second round drafts from the first one's history
            assert [r.token_ids for r in flat(c.generate(PROMPTS, **kw))] == plain
        st = c.stats()
        sched = st["scheduler"]
        assert sched["policy"] == "cost" and sched["drafters"] == ["suffix", "ngram", "model"]
        assert sched["cost_model"]["steps_observed"] > 0
        assert sched["cost_samples"] and {"predictedMs", "measuredMs"} <= set(sched["cost_samples"][0])
        assert st["drafter"]["metrics"]["steps"] > 0


def flat(results) -> list:
    return [r for per in results for r in per]


def cut_at_stop(tokens: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stop:
            return tokens[: i + 1]
    return tokens


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_token_ids_end_samples_as_vllm_does(tiny_dir, engine):
    with Server(tiny_dir, *ENGINES[engine], *FAST) as s, RolloutClient(s.address) as c:
        kw = {"n": 3, "max_tokens": 40, "temperature": 1.0, "seed": 5}
        free = flat(c.generate(PROMPTS, **kw))
        if engine == "suffix":  # a second round drafts from the first one's history, past the stop ids
            assert [r.token_ids for r in flat(c.generate(PROMPTS, **kw))] == [r.token_ids for r in free]
        eos = set(c.welcome["model"]["eos_ids"])
        first = free[0].token_ids
        stop = {next(t for i, t in enumerate(first) if i >= 4 and t not in first[:i] and t not in eos)}
        stop.add(free[4].token_ids[len(free[4].token_ids) // 2])
        got = flat(c.generate(PROMPTS, stop_token_ids=sorted(stop), **kw))
        cut = 0
        for r, f in zip(got, free, strict=True):
            want = cut_at_stop(f.token_ids, stop)
            assert r.token_ids == want
            assert r.log_probs == pytest.approx(f.log_probs[: len(want)], abs=1e-5)
            if len(want) < len(f.token_ids):
                cut += 1
                assert r.finish_reason == "stop" and want[-1] in stop
            else:
                assert r.finish_reason == f.finish_reason
        assert cut >= 2, "the stop ids ended too few samples early to show anything"

        async def streamed() -> dict[tuple[int, int], list[int]]:
            parts: dict[tuple[int, int], list[int]] = {}
            async with AsyncRolloutClient(s.address) as ac:
                async for j, i, new, _ in ac.generate_stream(PROMPTS, stop_token_ids=sorted(stop), **kw):
                    parts.setdefault((j, i), []).extend(new)
            return parts

        parts = asyncio.run(streamed())
        assert [parts[(j, i)] for j in range(3) for i in range(3)] == [r.token_ids for r in got]
        # top-k 0 is off, exactly as -1
        assert [r.token_ids for r in flat(c.generate(PROMPTS, top_k=0, **kw))] == [r.token_ids for r in free]
        vocab = c.welcome["model"]["vocab_size"]
        with pytest.raises(ServerError) as e:
            c.generate(PROMPTS, stop_token_ids=[3, vocab], **kw)
        assert e.value.code == "invalid_request" and "stop token id" in e.value.message


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts: it holds no port and runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def port_free(address: str) -> bool:
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


PARENT = """
import os, subprocess, sys, time
cmd = [*sys.argv[1:], "--parent-pid", str(os.getpid())]
child = subprocess.Popen(cmd, stdout=sys.stdout, stderr=sys.stderr)
print("server pid", child.pid, flush=True)
time.sleep(600)
"""


def test_the_server_exits_when_its_parent_dies(tiny_dir, tmp_path):
    """A trainer that starts the server and is SIGKILLed leaves no server and no worker behind."""
    log_path = tmp_path / "serve.log"
    serve = [*CLI, "serve", "--model", str(tiny_dir), "--address", "tcp://127.0.0.1:*", *FAST]
    serve += ["--engine", "workers", "--workers", "1"]
    with log_path.open("w") as log:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, *serve], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
    server_pid = None
    try:
        server_pid = int(parent.stdout.readline().split()[-1])
        line = parent.stdout.readline()
        assert "ready on " in line, line + log_path.read_text()
        address = line.split("ready on ", 1)[1].split()[0]
        with RolloutClient(address) as c:
            assert len(c.generate(PROMPTS, max_tokens=8, seed=1)) == 3
            (worker,) = c.stats()["workers"]
        assert not port_free(address) and not gone(worker["pid"])
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        t0 = time.monotonic()
        wait_until(lambda: gone(server_pid), "the server to exit", timeout=10)
        assert time.monotonic() - t0 < 5
        wait_until(lambda: gone(worker["pid"]), "the worker it started to exit", timeout=10)
        assert port_free(address)
        assert f"parent process {parent.pid} is gone" in log_path.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if server_pid is not None and not gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_sigterm_stops_the_server_and_frees_its_port(tiny_dir):
    s = Server(tiny_dir, *FAST)
    try:
        with RolloutClient(s.address) as c:
            c.generate(PROMPTS, max_tokens=4, seed=1)
        assert not port_free(s.address)
        s.proc.send_signal(signal.SIGTERM)
        assert s.wait(10) == 0
        assert port_free(s.address)
    finally:
        s.stop()


@pytest.mark.parametrize("engine", ["onnx", "workers"])
def test_release_and_restore_memory(tiny_dir, engine):
    """The torch worker pre-allocates its cache: kv_bytes drops to 0 and comes back. The ONNX engine
    allocates per live sequence, so it holds nothing when idle. Tokens are the same either side."""
    with Server(tiny_dir, *ENGINES[engine], *FAST) as s, RolloutClient(s.address) as c:
        kw = {"n": 2, "max_tokens": 24, "seed": 3}
        before = [r.token_ids for r in flat(c.generate(PROMPTS, **kw))]
        held = c.stats()["kv_bytes"]
        assert c.health()["memory"] == "held"
        assert held > 0 if engine == "workers" else held == 0
        with pytest.raises(ServerError) as e:
            c.release_memory()
        assert e.value.code == "not_paused"
        c.pause()
        assert c.release_memory() == 0
        assert (c.stats()["kv_bytes"], c.health()["memory"]) == (0, "released")
        if engine == "workers":
            (w,) = c.stats()["workers"]
            assert w["sequences"] == 0
        assert c.restore_memory() == held
        assert (c.stats()["kv_bytes"], c.health()["memory"]) == (held, "held")
        c.resume()
        assert [r.token_ids for r in flat(c.generate(PROMPTS, **kw))] == before
        # released and resumed without a restore: the next step restores it, nothing fails
        c.pause()
        c.release_memory()
        c.resume()
        assert [r.token_ids for r in flat(c.generate(PROMPTS, **kw))] == before
        assert (c.stats()["kv_bytes"], c.health()["memory"]) == (held, "held")
        assert c.clear_kv() == 0


def scrape(url: str) -> dict[str, float]:
    """The samples of a Prometheus text page: ``name{labels}`` -> value."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def test_prometheus_metrics_match_stats(tiny_dir):
    spec = ("--mode", "vanilla", "--drafter", "suffix", "--max-batch", "8")
    with Server(tiny_dir, *spec, "--metrics-port", "0", *FAST) as s, RolloutClient(s.address) as c:
        line = s.log_line("metrics on http://127.0.0.1:")
        url = line.split("metrics on ", 1)[1].strip()
        assert url.endswith("/metrics")
        for _ in range(2):  # the second round drafts from the first one's history
            c.generate(PROMPTS, n=4, max_tokens=24, seed=2)
        with pytest.raises(ServerError):
            c.generate(PROMPTS, stop_token_ids=[10**6], max_tokens=4)
        m = scrape(url)
        st = c.stats()
        for key in ("requests_accepted", "requests_finished", "requests_aborted", "requests_failed"):
            assert m[f"specactor_{key}_total"] == st[key], key
        assert m["specactor_requests_accepted_total"] == m["specactor_requests_finished_total"] == 2
        assert m["specactor_generated_tokens_total"] == st["generated_tokens"] > 0
        assert m["specactor_engine_steps_total"] == st["engine_steps"] > 0
        assert m["specactor_seq_steps_total"] == st["seq_steps"]
        assert m["specactor_batch_size_count"] == st["engine_steps"]
        assert m["specactor_batch_size_sum"] == st["seq_steps"]
        assert m['specactor_batch_size_bucket{le="8"}'] == st["engine_steps"]
        d = st["drafter"]
        assert d["accepted_tokens"] > 0
        for key in ("proposed_tokens", "accepted_tokens", "verify_steps"):
            assert m[f'specactor_drafter_{key}_total{{drafter="suffix"}}'] == d[key], key
        assert m["specactor_running_sequences"] == m["specactor_queued_sequences"] == 0
        assert m["specactor_weight_version"] == 0 and m["specactor_kv_bytes"] == st["kv_bytes"]
        assert m["specactor_clients"] >= 1
        c.pause()
        c.bump(3)
        c.resume()
        assert scrape(url)["specactor_weight_version"] == 3
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)


@pytest.mark.parametrize("engine", ["onnx", "suffix"])
def test_per_sample_seeds_and_draft_counts(tiny_dir, engine):
    from specactor.sampling import derive_seed

    with Server(tiny_dir, *FAST, *ENGINES[engine]) as server, RolloutClient(server.address) as client:
        derived = flat(client.generate(PROMPTS, n=2, max_tokens=24, seed=7))
        seeds = [derive_seed(7, j, i) for j in range(len(PROMPTS)) for i in range(2)]
        explicit = flat(client.generate(PROMPTS, n=2, max_tokens=24, seed=99, seeds=seeds))
        assert [r.token_ids for r in explicit] == [r.token_ids for r in derived]
        assert [r.seed for r in explicit] == seeds
        # one sample per request, as veRL sends them: each with the seed the CLI gives it
        one = [
            client.generate([PROMPTS[j]], max_tokens=24, seeds=[derive_seed(7, j, i)])[0][0]
            for j in range(len(PROMPTS))
            for i in range(2)
        ]
        assert [r.token_ids for r in one] == [r.token_ids for r in derived]
        with pytest.raises(ServerError, match="seeds holds 2 seeds for 3 prompt"):
            client.generate(PROMPTS, n=2, max_tokens=4, seeds=[1, 2])
        stats = client.stats()
    drafted = sum(r.draft_tokens for r in derived)
    if engine == "onnx":
        assert drafted == 0
    else:
        assert drafted > 0 and all(r.accepted_draft_tokens <= r.draft_tokens for r in derived)
        assert stats["drafter"]["proposed_tokens"] == drafted + sum(r.draft_tokens for r in explicit + one)


def test_ort_spinning_off_samples_the_same_tokens(tiny_dir):
    out = []
    for flag in ("on", "off"):
        with (
            Server(tiny_dir, *FAST, "--ort-spinning", flag) as server,
            RolloutClient(server.address) as client,
        ):
            out.append([r.token_ids for r in flat(client.generate(PROMPTS, n=2, max_tokens=16, seed=4))])
    assert out[0] == out[1]
    proc = subprocess.run(
        [*CLI, "serve", "--model", str(tiny_dir), "--ort-spinning", "maybe"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "--ort-spinning must be on or off" in proc.stderr
