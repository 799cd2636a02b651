"""The torch engine (specactor.worker.engine) against transformers' full forward pass and the seeded
sampler, and the worker process (specactor.worker) against a fake server: a ROUTER in this test."""

from __future__ import annotations

import json
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zmq
from conftest import cli_rollout, naive_decode
from specactor import wire
from specactor.sampling import SamplingParams, derive_seed
from specactor.worker import InvalidRequest, SeqStep, TorchEngine, WeightLoadError, Worker
from transformers import AutoModelForCausalLM

EOS = (2,)
PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301], [5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [1, 400, 33]]
T1 = SamplingParams(temperature=1.0)


@pytest.fixture(scope="module")
def hf(tiny_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_dir / "hf", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> TorchEngine:
    return TorchEngine(tiny_dir, max_batch=8, max_context=256)


@pytest.fixture
def fresh(engine: TorchEngine) -> TorchEngine:
    """The shared engine with no live sequence."""
    engine.release_all()
    return engine


def reference(hf: Any, prompt: list[int], params: SamplingParams, seed: int, max_tokens: int):
    return naive_decode(hf, prompt, params, seed, max_tokens, EOS)


def plain(
    engine: TorchEngine, seq: int, prompt: list[int], params: SamplingParams, seed: int, max_tokens: int
):
    """One token per step through TorchEngine.step."""
    out: list[int] = []
    lps: list[float] = []
    append = list(prompt)
    while len(out) < max_tokens and not (out and out[-1] in EOS):
        (r,) = engine.step([SeqStep(seq_id=seq, append=append, params=params, seed=seed, max_emit=1)])
        assert r.seq_id == seq and len(r.tokens) == 1 and r.accepted == 0
        out += r.tokens
        lps += r.log_probs
        append = r.tokens
    return out, lps


def speculate(engine: TorchEngine, seq: int, prompt: list[int], params, seed: int, max_tokens: int, trie_for):
    """Decode with a trie every step: ``trie_for(emitted so far)`` -> (tokens, parents)."""
    out: list[int] = []
    lps: list[float] = []
    accepted = 0
    append = list(prompt)
    while len(out) < max_tokens and not (out and out[-1] in EOS):
        tokens, parents = trie_for(out)
        step = SeqStep(
            seq_id=seq,
            append=append,
            trie_tokens=tokens,
            trie_parents=parents,
            params=params,
            seed=seed,
            max_emit=max_tokens - len(out),
        )
        (r,) = engine.step([step])
        assert (
            len(r.tokens) == r.accepted + 1 or r.tokens[-1] in EOS or len(out) + len(r.tokens) == max_tokens
        )
        assert engine.cached_length(seq) == len(prompt) + len(out) + r.accepted
        out += r.tokens
        lps += r.log_probs
        accepted += r.accepted
        append = r.tokens[-1:]
    return out, lps, accepted


# -- (a) plain decoding = transformers' full forward + the seeded sampler ------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("seed", [3, 2**40 + 11])
def test_plain_decoding_matches_the_full_forward(hf, fresh, temperature, seed):
    params = SamplingParams(temperature=temperature)
    for i, prompt in enumerate(PROMPTS[:3]):
        want, want_lps = reference(hf, prompt, params, seed, 40)
        got, got_lps = plain(fresh, i, prompt, params, seed, 40)
        assert got == want and len(want) > 5
        np.testing.assert_allclose(got_lps, want_lps, atol=1e-4)


def test_top_k_top_p_and_the_typescript_engine(tiny_dir, tmp_path, fresh):
    """Token for token what `specactor rollout` (the ONNX engine) samples for the same seeds."""
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=30)
    args = ("--n", "1", "--max-tokens", "48", "--seed", "31", "--temperature", "0.8", "--top-p", "0.9")
    raw, _ = cli_rollout(
        tiny_dir, [{"prompt_ids": p} for p in PROMPTS], tmp_path, "onnx", *args, "--top-k", "30"
    )
    rows = [json.loads(line) for line in raw.splitlines()]
    assert len(rows) == len(PROMPTS) and sum(len(r["token_ids"]) for r in rows) > 100
    for row in rows:
        j = row["prompt_index"]
        got, lps = plain(fresh, j, PROMPTS[j], params, derive_seed(31, j, 0), 48)
        assert got == row["token_ids"]
        np.testing.assert_allclose(lps, row["logprobs"], atol=1e-4)


# -- (b) ragged batches = each sequence alone ----------------------------------------------------------


def test_ragged_batches_match_each_sequence_alone(fresh):
    params = [T1, SamplingParams(temperature=0.7, top_k=20), SamplingParams(temperature=0), T1, T1]
    seeds = [7, 8, 9, 10, 11]
    alone = [plain(fresh, 100 + i, p, params[i], seeds[i], 30) for i, p in enumerate(PROMPTS)]
    fresh.release_all()
    # staggered admissions, sequences that finish early and whose slots are then reused / moved
    out: dict[int, list[int]] = {}
    lps: dict[int, list[float]] = {}
    nxt: dict[int, list[int]] = {}
    admitted = 0
    for step in range(200):
        if admitted < len(PROMPTS) and step % 3 == 0:
            out[admitted], lps[admitted], nxt[admitted] = [], [], list(PROMPTS[admitted])
            admitted += 1
        live = [i for i in nxt if len(out[i]) < 30 and not (out[i] and out[i][-1] in EOS)]
        for i in [i for i in nxt if i not in live]:
            fresh.release(i)
            del nxt[i]
        if not live and admitted == len(PROMPTS):
            break
        rng = random.Random(step)
        chosen = [i for i in live if rng.random() < 0.7] or live  # subsets: non-contiguous slots too
        batch = [
            SeqStep(seq_id=i, append=nxt[i], params=params[i], seed=seeds[i], max_emit=1) for i in chosen
        ]
        rng.shuffle(batch)
        results = fresh.step(batch)
        assert [r.seq_id for r in results] == [s.seq_id for s in batch]
        for r in results:
            out[r.seq_id] += r.tokens
            lps[r.seq_id] += r.log_probs
            nxt[r.seq_id] = r.tokens
    for i, (tokens, logprobs) in enumerate(alone):
        assert out[i] == tokens
        np.testing.assert_allclose(lps[i], logprobs, atol=1e-5)


# -- (c) verification with tries returns exactly the plain tokens -------------------------------------


def oracle(target: list[int], k: int):
    return lambda out: (
        target[len(out) : len(out) + k],
        list(range(-1, len(target[len(out) : len(out) + k]) - 1)),
    )


def wrong(vocab: int, k: int):
    rng = random.Random(5)
    return lambda out: ([rng.randrange(3, vocab) for _ in range(k)], list(range(-1, k - 1)))


def branching(target: list[int], vocab: int):
    """Two depth-1 branches (a wrong one first), the right one forking again at depth 2 and 3."""
    rng = random.Random(9)

    def trie(out):
        t = target[len(out) :]
        if len(t) < 3:  # near the end: the right branch alone
            return t[:2], list(range(-1, len(t[:2]) - 1))
        bad = [rng.randrange(3, vocab) for _ in range(4)]
        tokens = [bad[0], t[0], bad[1], t[1], t[2], bad[2], bad[3]]
        parents = [-1, -1, 1, 1, 3, 3, 0]  # node 6 hangs below the wrong branch
        return tokens, parents

    return trie


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tries_emit_exactly_the_plain_tokens(fresh, temperature):
    params = SamplingParams(temperature=temperature)
    for i, prompt in enumerate(PROMPTS[:3]):
        seed = 40 + i
        want, want_lps = plain(fresh, 0, prompt, params, seed, 40)
        fresh.release(0)
        cases = {
            "oracle": oracle(want, 4),
            "wrong": wrong(fresh.vocab_size, 3),
            "branching": branching(want, 400),
        }
        for name, trie_for in cases.items():
            got, lps, accepted = speculate(fresh, 1, prompt, params, seed, 40, trie_for)
            fresh.release(1)
            assert got == want, name
            np.testing.assert_allclose(lps, want_lps, atol=1e-5)
            if name == "oracle":
                assert accepted > 0 and accepted >= len(want) // 2
            if name == "branching" and len(want) > 3:
                assert accepted > 0


def test_a_batch_of_tries_and_plain_sequences(fresh):
    want = [plain(fresh, i, p, T1, 60 + i, 25)[0] for i, p in enumerate(PROMPTS)]
    fresh.release_all()
    out: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}
    nxt = {i: list(p) for i, p in enumerate(PROMPTS)}
    tries = [
        oracle(want[0], 5),
        wrong(430, 2),
        branching(want[2], 400),
        lambda out: ([], []),
        oracle(want[4], 1),
    ]
    while nxt:
        batch = []
        for i, append in nxt.items():
            tokens, parents = tries[i](out[i])
            batch.append(
                SeqStep(
                    seq_id=i,
                    append=append,
                    trie_tokens=tokens,
                    trie_parents=parents,
                    params=T1,
                    seed=60 + i,
                    max_emit=25 - len(out[i]),
                )
            )
        for r in fresh.step(batch):
            out[r.seq_id] += r.tokens
            nxt[r.seq_id] = r.tokens[-1:]
            if len(out[r.seq_id]) >= 25 or out[r.seq_id][-1] in EOS:
                del nxt[r.seq_id]
    assert [out[i] for i in range(len(PROMPTS))] == want


def test_stop_ids_end_a_sample_mid_trie_as_eos_does(fresh):
    """A request's stop id ends the walk where it is sampled, also inside a draft chain that goes on."""
    prompt, seed = PROMPTS[0], 77
    want, want_lps = plain(fresh, 0, prompt, T1, seed, 40)
    fresh.release(0)
    k = next(i for i in range(4, len(want) - 4) if want[i] not in want[:i] and want[i] not in EOS)
    stop = want[k]
    chain = want[: k + 4]  # the drafts run past the stop token
    step = SeqStep(
        seq_id=1,
        append=list(prompt),
        trie_tokens=chain,
        trie_parents=list(range(-1, len(chain) - 1)),
        params=T1,
        seed=seed,
        max_emit=40,
        stop_ids=[stop],
    )
    (r,) = fresh.step([step])
    assert r.tokens == want[: k + 1] and r.accepted == k
    np.testing.assert_allclose(r.log_probs, want_lps[: k + 1], atol=1e-5)
    assert fresh.cached_length(1) == len(prompt) + k  # the stop token's KV is not kept, as after EOS
    fresh.release(1)
    # plain steps with the same stop id end at the same token
    out: list[int] = []
    append = list(prompt)
    while not out or out[-1] != stop:
        (r,) = fresh.step(
            [SeqStep(seq_id=2, append=append, params=T1, seed=seed, max_emit=1, stop_ids=[stop])]
        )
        out += r.tokens
        append = r.tokens
        assert len(out) <= k + 1
    assert out == want[: k + 1]
    fresh.release(2)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        fresh.step([SeqStep(seq_id=3, append=[1], seed=1, max_emit=1, stop_ids=[fresh.vocab_size])])
    assert fresh.live == 0


def test_step_messages_carry_optional_stop_ids():
    from specactor.worker.process import check_body, parse_step

    spec = {"seq": 4, "num_append": 2, "trie_parents": [-1], "temperature": 1, "top_p": 1, "top_k": 0}
    spec |= {"seed": 9, "max_emit": 3}
    arrays = {"append_ids": np.array([5, 6], np.int32), "trie_tokens": np.array([7], np.int32)}
    for extra, stop_ids in [({}, []), ({"stop_ids": [3, 8]}, [3, 8])]:
        m = wire.decode(wire.encode("step", {"step_id": 1, "seqs": [spec | extra]}, arrays))
        check_body("step", m.body)
        (s,) = parse_step(m.body)
        assert s.stop_ids == stop_ids and s.params.top_k == 0 and s.trie_tokens == [7]
    bad = wire.decode(wire.encode("step", {"step_id": 1, "seqs": [spec | {"stop_ids": [-2]}]}, arrays))
    with pytest.raises(wire.WireError, match="stop_ids"):
        check_body("step", bad.body)


# -- (d) truncate ---------------------------------------------------------------------------------------


def test_truncate_then_restep_reproduces(fresh):
    prompt = PROMPTS[3]
    want, _ = plain(fresh, 0, prompt, T1, 21, 30)
    assert fresh.cached_length(0) == len(prompt) + len(want) - 1
    fresh.truncate(0, len(prompt) + 10)  # keep the prompt and want[:10]
    got, _ = plain(fresh, 0, want[10:11], T1, 21, len(want) - 11)
    assert got == want[11:]
    fresh.truncate(0, 0)
    assert plain(fresh, 0, prompt, T1, 21, 30)[0] == want
    with pytest.raises(InvalidRequest):
        fresh.truncate(0, 10_000)
    with pytest.raises(InvalidRequest):
        fresh.truncate(12345, 0)
    fresh.release(12345)  # unknown ids are ignored


# -- (e) load_weights -----------------------------------------------------------------------------------


def test_load_weights_equals_a_saved_checkpoint(tiny_dir, tmp_path):
    perturbed = AutoModelForCausalLM.from_pretrained(tiny_dir / "hf", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1 * (p.std() if p.numel() > 1 else 1))
    saved = tmp_path / "perturbed"
    perturbed.save_pretrained(saved / "hf")
    (saved / "onnx").mkdir()
    shutil.copy(tiny_dir / "onnx" / "model.json", saved / "onnx" / "model.json")

    loaded = TorchEngine(tiny_dir, max_batch=2, max_context=128)
    before = [plain(loaded, i, p, T1, 77, 30) for i, p in enumerate(PROMPTS[:2])]
    loaded.release_all()
    named = list(perturbed.state_dict().items())
    assert loaded.load_weights(iter(named), version=3) == len(named)
    assert loaded.weight_version == 3
    reference_engine = TorchEngine(saved, max_batch=2, max_context=128)
    for i, p in enumerate(PROMPTS[:2]):
        got = plain(loaded, i, p, T1, 77, 30)
        assert got == plain(reference_engine, i, p, T1, 77, 30)
        assert got[1] != before[i][1]  # the new weights are in use

    with pytest.raises(WeightLoadError, match="unknown parameter"):
        loaded.load_weights([("model.layers.9.mlp.up_proj.weight", torch.zeros(1))])
    with pytest.raises(WeightLoadError, match="shape"):
        loaded.load_weights([("model.norm.weight", torch.zeros(3))])


# -- (f) the KV cache is allocated once; validation ----------------------------------------------------


def test_the_kv_cache_is_never_reallocated(fresh):
    ptrs = [t.data_ptr() for t in (*fresh.keys, *fresh.values)]
    objects = [*fresh.keys, *fresh.values]
    for i, p in enumerate(PROMPTS):
        plain(fresh, i, p, T1, i, 20)
    fresh.release(1)  # moves the last sequence into slot 1
    fresh.truncate(0, 3)
    speculate(fresh, 9, PROMPTS[0], T1, 5, 20, wrong(430, 4))
    assert [t.data_ptr() for t in (*fresh.keys, *fresh.values)] == ptrs
    assert all(a is b for a, b in zip(objects, [*fresh.keys, *fresh.values], strict=True))
    assert fresh.keys[0].shape == (8, fresh.num_kv_heads, 256, fresh.head_dim)
    assert fresh.values[0].shape == (8, fresh.num_kv_heads, fresh.head_dim, 256)


def test_invalid_steps_are_refused_and_change_nothing(fresh):
    plain(fresh, 0, [1, 2, 3], T1, 1, 2)
    state = fresh.cached_length(0), fresh.live
    ok: dict[str, Any] = {"params": T1, "seed": 1, "max_emit": 1}
    bad = [
        ([SeqStep(seq_id=1, append=[1, 430], **ok)], "outside the vocabulary"),
        (
            [SeqStep(seq_id=1, append=[1], trie_tokens=[-1], trie_parents=[-1], **ok)],
            "outside the vocabulary",
        ),
        (
            [SeqStep(seq_id=1, append=[1] * 250, trie_tokens=[3] * 7, trie_parents=list(range(-1, 6)), **ok)],
            "exceed the context",
        ),
        ([SeqStep(seq_id=1, append=[1], **ok), SeqStep(seq_id=1, append=[2], **ok)], "twice"),
        ([SeqStep(seq_id=1, append=[], **ok)], "at least one token"),
        ([SeqStep(seq_id=1, append=[1], trie_tokens=[3], trie_parents=[0], **ok)], "parent"),
        ([SeqStep(seq_id=i, append=[1], **ok) for i in range(1, 9)], "slots"),
        ([SeqStep(seq_id=1, append=[1], params=T1, seed=2**53, max_emit=1)], "seed"),
        ([SeqStep(seq_id=1, append=[1], params=T1, seed=1, max_emit=0)], "max_emit"),
    ]
    for batch, why in bad:
        with pytest.raises(InvalidRequest, match=why):
            fresh.step([SeqStep(seq_id=0, append=[5], **ok), *batch])
        assert (fresh.cached_length(0), fresh.live) == state
    assert fresh.step([]) == []


# -- the worker: a fake server (a ROUTER in this test) --------------------------------------------------


class FakeServer:
    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.heartbeats = 0
        self.peer: bytes | None = None

    def recv(self, timeout: float = 30.0) -> wire.Message:
        """The next message other than a heartbeat (counted)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError("no message from the worker")
            peer, *frames = self.sock.recv_multipart()
            self.peer = peer
            message = wire.decode(frames)
            if message.type == "heartbeat":
                self.heartbeats += 1
                continue
            return message

    def send(self, type: str, body: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        assert self.peer is not None
        self.sock.send_multipart([self.peer, *wire.encode(type, body, arrays)])

    def step(self, step_id: int, seqs: list[SeqStep]) -> None:
        specs = [
            {
                "seq": s.seq_id,
                "num_append": len(s.append),
                "trie_parents": s.trie_parents,
                "temperature": s.params.temperature,
                "top_p": s.params.top_p,
                "top_k": s.params.top_k,
                "seed": s.seed,
                "max_emit": s.max_emit,
            }
            for s in seqs
        ]
        arrays = {
            "append_ids": np.array([t for s in seqs for t in s.append], dtype=np.int32),
            "trie_tokens": np.array([t for s in seqs for t in s.trie_tokens], dtype=np.int32),
        }
        self.send("step", {"step_id": step_id, "seqs": specs}, arrays)

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def result_tokens(message: wire.Message) -> list[tuple[int, list[int], int]]:
    assert message.type == "step_result", message.body
    tokens = message.body["token_ids"].tolist()
    out, offset = [], 0
    for r in message.body["results"]:
        out.append((r["seq"], tokens[offset : offset + r["num_tokens"]], r["accepted"]))
        offset += r["num_tokens"]
    assert offset == len(tokens) == message.body["log_probs"].shape[0]
    return out


def read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "the worker printed nothing"
    return stream.readline()


def test_worker_process_against_a_fake_server(tiny_dir, fresh):
    want, _ = plain(fresh, 0, PROMPTS[0], T1, 5, 12)
    server = FakeServer()
    cmd = [sys.executable, "-m", "specactor.worker", "--connect", server.address, "--model", str(tiny_dir)]
    cmd += [
        "--role",
        "verifier",
        "--device",
        "cpu",
        "--max-batch",
        "4",
        "--max-context",
        "128",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reg = server.recv(timeout=60)
        assert reg.type == "register"
        assert reg.body["protocol"] == 1 and reg.body["role"] == "verifier" and reg.body["model"] == "tiny"
        assert reg.body["capacity"] == {"max_batch": 4, "max_context": 128}
        assert reg.body["vocab_size"] == 430 and reg.body["eos_ids"] == [2] and reg.body["pid"] == proc.pid
        assert reg.body["device"] == "cpu"
        server.send("registered", {"worker_id": "w-7", "heartbeat_interval_s": 0.05, "worker_timeout_s": 30})
        line = read_line(proc.stdout, 10)
        assert "registered" in line and "w-7" in line

        # an oracle trie for sequence 0 and a plain prompt for sequence 1, in one step
        server.step(1, [
            SeqStep(seq_id=0, append=PROMPTS[0], trie_tokens=want[:4], trie_parents=[-1, 0, 1, 2], params=T1, seed=5, max_emit=12),
            SeqStep(seq_id=1, append=PROMPTS[1], params=T1, seed=6, max_emit=1),
        ])  # fmt: skip
        reply = server.recv()
        assert reply.body["step_id"] == 1
        (s0, tokens0, accepted0), (s1, tokens1, _) = result_tokens(reply)
        assert (s0, s1) == (0, 1) and tokens0 == want[:5] and accepted0 == 4
        assert tokens1 == plain(fresh, 1, PROMPTS[1], T1, 6, 1)[0]

        # a malformed step, a step the engine refuses, a bad truncate: errors, and the worker serves on
        short = {"append_ids": np.array([1], dtype=np.int32), "trie_tokens": np.zeros(0, dtype=np.int32)}
        spec = {
            "seq": 2,
            "num_append": 2,
            "trie_parents": [],
            "temperature": 1,
            "top_p": 1,
            "top_k": -1,
            "seed": 1,
            "max_emit": 1,
        }
        server.send("step", {"step_id": 2, "seqs": [spec]}, short)
        err = server.recv()
        assert err.type == "error" and err.body["code"] == "bad_message" and err.body["step_id"] == 2
        server.send(
            "step",
            {"step_id": 3, "seqs": [{**spec, "top_p": 0}]},
            {**short, "append_ids": np.array([1, 2], dtype=np.int32)},
        )
        err = server.recv()
        assert (
            err.body["code"] == "bad_message" and err.body["step_id"] == 3 and "top_p" in err.body["message"]
        )
        server.step(4, [SeqStep(seq_id=2, append=[1, 999], params=T1, seed=1, max_emit=1)])
        err = server.recv()
        assert err.body["code"] == "invalid_request" and err.body["step_id"] == 4
        server.send("truncate", {"seq": 77, "length": 0})
        err = server.recv()
        assert err.body["code"] == "invalid_request" and err.body["type"] == "truncate"
        server.sock.send_multipart([server.peer, b"step", b"\xc1"])
        assert server.recv().body["code"] == "bad_message"

        server.step(5, [SeqStep(seq_id=0, append=want[4:5], params=T1, seed=5, max_emit=7)])
        ((_, tokens, _),) = result_tokens(server.recv())
        assert tokens == want[5:6]
        server.send("release", {"seqs": [0, 1, 99]})
        server.send("truncate", {"seq": 0, "length": 0})  # released: unknown now
        assert server.recv().body["code"] == "invalid_request"

        seen = server.heartbeats
        time.sleep(0.5)
        server.send("heartbeat", {})
        with pytest.raises(AssertionError, match="no message"):
            server.recv(timeout=0.2)
        assert server.heartbeats - seen >= 5

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        server.close()


class SlowEngine:
    """The engine with a slow step, to show heartbeats flow while a step computes."""

    def __init__(self, engine: TorchEngine, delay: float) -> None:
        self._engine, self._delay = engine, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def step(self, seqs):
        time.sleep(self._delay)
        return self._engine.step(seqs)


def test_in_process_worker_heartbeats_while_computing_and_exits_on_silence(fresh):
    server = FakeServer()
    worker = Worker(SlowEngine(fresh, 0.6), server.address, role="drafter")  # type: ignore[arg-type]
    registering = threading.Thread(target=worker.start, kwargs={"timeout": 10})
    registering.start()
    try:
        reg = server.recv()
        assert reg.type == "register" and reg.body["role"] == "drafter"
        server.send("registered", {"worker_id": "w-1", "heartbeat_interval_s": 0.05, "worker_timeout_s": 1.0})
        registering.join()
        assert worker.worker_id == "w-1" and worker.running

        server.step(1, [SeqStep(seq_id=3, append=[1, 2, 3], params=T1, seed=3, max_emit=1)])
        reply = server.recv()
        assert server.heartbeats >= 8  # 0.6 s of computing at 0.05 s
        assert result_tokens(reply)[0][1] == plain(fresh, 4, [1, 2, 3], T1, 3, 1)[0]

        # the server says nothing from now on: the worker leaves after worker_timeout_s
        deadline = time.monotonic() + 5
        while worker.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker.running and worker.exit_code == 1 and "silent" in (worker.exit_reason or "")
    finally:
        worker.stop()
        server.close()


def test_release_and_restore_memory(fresh):
    held = fresh.kv_bytes
    want = plain(fresh, 0, PROMPTS[0], T1, 8, 12)[0]
    with pytest.raises(InvalidRequest, match="sequence"):
        fresh.release_memory()  # sequence 0 is live
    fresh.release(0)
    assert fresh.release_memory() == 0 and fresh.kv_bytes == 0 and fresh.memory_released
    assert fresh.restore_memory() == held and not fresh.memory_released
    assert all(not k.any() for k in fresh.keys)  # zero-filled again
    fresh.release_memory()
    assert plain(fresh, 0, PROMPTS[0], T1, 8, 12)[0] == want  # a step restores it first
    assert fresh.kv_bytes == held


def test_released_weights_come_back_only_through_a_full_load(tiny_dir, hf):
    """veRL's release with free_cache_engine frees the weights; a step before every parameter is
    loaded again is an error, and after the load the engine samples exactly as before."""
    engine = TorchEngine(tiny_dir, max_batch=2, max_context=64)
    weights = {n: t.detach().clone() for n, t in hf.state_dict().items()}
    held = engine.weight_bytes
    before, _ = plain(engine, 1, [1, 5, 9], T1, 11, 12)
    engine.release(1)
    assert held > 0 and engine.release_weights() == 0 and not engine.weights_loaded
    with pytest.raises(Exception, match="hold no weights"):
        plain(engine, 2, [1, 5, 9], T1, 11, 4)
    with pytest.raises(WeightLoadError, match="released: call restore_weights"):
        engine.load_weights(iter(weights.items()))
    assert engine.restore_weights() == held
    last = "model.norm.weight"  # a parameter no other name shares
    engine.load_weights((n, t) for n, t in weights.items() if n != last)
    with pytest.raises(Exception, match="hold no weights"):
        plain(engine, 3, [1, 5, 9], T1, 11, 4)
    engine.load_weights([(last, weights[last])])
    assert engine.weights_loaded
    after, _ = plain(engine, 4, [1, 5, 9], T1, 11, 12)
    assert after == before
