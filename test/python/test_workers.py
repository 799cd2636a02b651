"""The server driving Python torch engine workers: the same tokens as the in-process ONNX engine,
failover when a worker is killed or hangs, an explicit error when none is left, and weights loaded
from the trainer side (pause, load, bump, resume)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from conftest import Server, cli_rollout, wait_until
from specactor.client import RolloutClient, ServerError
from specactor.worker import TorchEngine, Worker

PROMPTS = [[1, 17, 42, 99, 7], [5, 6, 7, 5, 6, 7], [1, 300, 301]]
FAST = ("--heartbeat-interval", "0.2", "--client-timeout", "5", "--worker-timeout", "1.5")


def cli_tokens(model_dir, tmp_path, name: str, *args: str) -> list[list[int]]:
    raw, _ = cli_rollout(model_dir, [{"prompt_ids": p} for p in PROMPTS], tmp_path, name, *args)
    return [json.loads(line)["token_ids"] for line in raw.splitlines()]


def flat(results) -> list[list[int]]:
    return [r.token_ids for per in results for r in per]


@pytest.mark.parametrize("mode", ["plain", "vanilla"])
def test_workers_return_the_onnx_engines_tokens(tiny_dir, tmp_path, mode):
    expected = cli_tokens(
        tiny_dir, tmp_path, "onnx", "--n", "3", "--max-tokens", "40", "--seed", "13", "--temperature", "0.8"
    )
    spec = ("--mode", "vanilla", "--drafter", "suffix") if mode == "vanilla" else ()
    workers = ("--engine", "workers", "--workers", "2", "--max-batch", "16")
    with Server(tiny_dir, *workers, *spec, *FAST) as s, RolloutClient(s.address) as c:
        for _ in range(2 if mode == "vanilla" else 1):
            assert flat(c.generate(PROMPTS, n=3, max_tokens=40, temperature=0.8, seed=13)) == expected
        stats = c.stats()
    assert len(stats["workers"]) == 2 and all(w["steps"] > 0 for w in stats["workers"])
    if mode == "vanilla":
        assert stats["drafter"]["accepted_tokens"] > 0


@pytest.mark.parametrize("mode", ["vanilla", "decoupled"])
def test_a_model_drafter_on_drafter_workers(tiny_dir, tmp_path, mode):
    """Verifier and drafter both run as Python workers (the drafter here is the model itself, so its
    drafts are the verifier's samples whenever the coupled noise agrees); decoupled, the drafter
    worker drafts ahead while the verifier worker verifies."""
    expected = cli_tokens(
        tiny_dir, tmp_path, "onnx", "--n", "2", "--max-tokens", "32", "--seed", "3", "--temperature", "0.7"
    )
    spec = (
        "--mode",
        mode,
        "--drafter",
        "model",
        "--drafter-model",
        str(tiny_dir),
        "--drafter-workers",
        "1",
        "--draft-cost",
        "off",  # the policy as its own drafter: keep its chains long
    )
    with (
        Server(tiny_dir, "--engine", "workers", "--workers", "1", *spec, *FAST) as s,
        RolloutClient(s.address) as c,
    ):
        assert flat(c.generate(PROMPTS, n=2, max_tokens=32, temperature=0.7, seed=3)) == expected
        drafter = c.stats()["drafter"]
    assert drafter["errors"] == 0
    if mode == "vanilla":  # tiny's drafter seldom gets ahead of tiny in decoupled mode
        assert drafter["accepted_tokens"] > 0.5 * drafter["proposed_tokens"] > 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def busy_worker_pid(c: RolloutClient) -> int:
    deadline = time.time() + 20
    while time.time() < deadline:
        ws = [w for w in c.stats()["workers"] if w["sequences"] > 0 and w["steps"] > 0]
        if ws:
            return ws[0]["pid"]
        time.sleep(0.05)
    raise AssertionError("no worker became busy")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_lost_workers_sequences_rerun_elsewhere_with_the_same_tokens(tiny_dir, tmp_path, how):
    args = ("--n", "4", "--max-tokens", "400", "--seed", "5", "--temperature", "1")
    expected = cli_tokens(tiny_dir, tmp_path, "ref", *args)
    workers = ("--engine", "workers", "--workers", "2", "--max-batch", "16")
    with Server(tiny_dir, *workers, *FAST) as s, RolloutClient(s.address) as c:
        got: list = []
        t = threading.Thread(target=lambda: got.append(c.generate(PROMPTS, n=4, max_tokens=400, seed=5)))
        t.start()
        pid = busy_worker_pid(c)
        os.kill(pid, how)  # after it has answered steps, with sequences on it
        t.join(120)
        stats = c.stats()
    assert flat(got[0]) == expected
    assert stats["workers_lost"] == 1 and stats["steps_rerun"] >= 1 and stats["sequences_moved"] >= 1
    assert len(stats["workers"]) == 1
    if how == signal.SIGSTOP:  # the server killed the hung worker: it must not return with stale state
        wait_until(lambda: not alive(pid), "the hung worker to be killed")


def test_with_no_worker_left_requests_fail_explicitly(tiny_dir):
    with Server(tiny_dir, "--engine", "workers", "--workers", "1", *FAST) as s, RolloutClient(s.address) as c:
        errors: list = []

        def run() -> None:
            try:
                c.generate(PROMPTS, n=2, max_tokens=900, seed=1)
            except ServerError as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        pid = busy_worker_pid(c)
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        t.join(30)
        assert errors and errors[0].code == "engine_failed", errors
        assert time.time() - t0 < 10
        assert c.health()["status"] == "ok"  # the server itself keeps serving


def test_weights_loaded_from_the_trainer_side(tiny_dir, tmp_path):
    """A trainer process holds the engine, serves it as a worker, and loads new weights into it while
    the server is paused; the outputs then equal a worker built from the updated checkpoint."""
    engine = TorchEngine(tiny_dir, max_batch=8)
    g = torch.Generator().manual_seed(3)
    updated = {
        name: p.detach() * (1 + 0.05 * torch.randn(p.shape, generator=g))
        for name, p in engine.hf_model.named_parameters()
    }
    with Server(tiny_dir, "--engine", "workers", "--min-workers", "0", *FAST) as s:
        worker_address = s.log_line("workers connect to ").split()[-1]
        w = Worker(engine, worker_address)
        w.start()  # returns once registered
        try:
            with RolloutClient(s.address) as c:
                before = flat(c.generate(PROMPTS, max_tokens=24, seed=4))
                c.pause()
                t0 = time.perf_counter()
                loaded = engine.load_weights(updated.items())
                took = time.perf_counter() - t0
                assert loaded == len(updated)
                assert c.bump() == 1
                c.resume()
                after = c.generate(PROMPTS, max_tokens=24, seed=4)
        finally:
            w.stop()
    assert all(r.weight_version == 1 for per in after for r in per)
    assert flat(after) != before
    # a worker started from the updated checkpoint gives the same tokens
    ckpt = tmp_path / "updated"
    engine.hf_model.save_pretrained(ckpt / "hf")
    (ckpt / "onnx").mkdir()
    (ckpt / "onnx" / "model.json").write_text((tiny_dir / "onnx" / "model.json").read_text())
    with Server(ckpt, "--engine", "workers", "--workers", "1", *FAST) as s, RolloutClient(s.address) as c:
        assert flat(c.generate(PROMPTS, max_tokens=24, seed=4)) == flat(after)
    print(f"loaded {loaded} tensors in {took * 1000:.1f} ms")
