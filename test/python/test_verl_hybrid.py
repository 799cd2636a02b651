"""veRL's hybrid engine on CPU: a local Ray, a stand-in trainer-rank actor that builds the real
ServerAdapter (as veRL's ActorRolloutRefWorker does in init_model), the real SpecActorReplica's
init_hybrid, the real server, and veRL's step sequence with in-memory tensors:
release -> resume(weights) -> update_weights(perturbed copy) -> resume(kv_cache)."""

from __future__ import annotations

import asyncio
import os
import types
from pathlib import Path
from typing import Any

import pytest
import ray
from conftest import wait_until
from specactor.client import RolloutClient
from specactor.server_process import ServerProcess
from specactor.verl import check
from specactor.verl.settings import SettingsError

PROMPTS = [[1, 42, 7, 99, 5], [1, 13, 8, 250, 31, 4]]
PARAMS: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 160}
SEEDS = [11, 12]
STEPS = 3  # the global step the sync brings
MAX_BATCH = 4


def compose(model_dir: Path, *overrides: str, flags: tuple[str, ...] = ()) -> Any:
    args = check.parse_args(
        [
            *flags,
            "--model",
            str(model_dir),
            "--prompts",
            "-",
            "--json",
            "-",
            "--max-batch",
            str(MAX_BATCH),
            *[x for o in ("actor_rollout_ref.rollout.dtype=float32", *overrides) for x in ("--override", o)],
        ]
    )
    return check.compose_config(args, model_dir, 64)


@ray.remote(num_cpus=0)
class TrainerRank:
    """Stands in for veRL's trainer worker: holds the adapter as ``rollout``, hands it tensors."""

    def __init__(self, rollout_cfg: Any, model_cfg: Any, rank: int) -> None:
        os.environ["RANK"] = str(rank)
        import specactor.verl  # noqa: F401  (veRL's plugin import)
        from verl.workers.rollout.base import get_rollout_class

        self.rollout = get_rollout_class("specactor", "async")(
            config=rollout_cfg, model_config=model_cfg, device_mesh=None
        )

    async def release(self) -> None:
        await self.rollout.release()

    async def resume(self, tags: list[str]) -> None:
        await self.rollout.resume(tags=tags)

    async def update_weights(self, hf_dir: str, global_steps: int, **kwargs: Any) -> float:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        # veRL's get_per_tensor_param: a generator of (HF name, tensor) on the rank's device
        weights = ((n, p.detach()) for n, p in model.state_dict().items())
        await self.rollout.update_weights(weights, global_steps=global_steps, **kwargs)
        return float(self.rollout.last_sync_s)

    async def update_with(self, weights: list[tuple[str, Any]], global_steps: int, **kwargs: Any) -> None:
        await self.rollout.update_weights(iter(weights), global_steps=global_steps, **kwargs)

    def kv_bytes(self) -> int:
        return int(self.rollout.engine.kv_bytes)

    def weight_version(self) -> int:
        return int(self.rollout.engine.weight_version)

    def engine_steps(self) -> int:
        return int(self.rollout.worker.steps)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def perturbed_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The perturbed checkpoint: `specactor rollout --drift`'s deterministic copy of tiny."""
    from specactor.models.drift import make

    out = tmp_path_factory.mktemp("drift") / "tiny-drift"
    make(tiny_dir, out, scale=0.2, epoch=1)
    return out


def reference(model_dir: Path) -> list[list[int]]:
    """A server whose own worker started from ``model_dir``: the tokens to match."""
    proc = ServerProcess(
        [
            "--model",
            str(model_dir),
            "--engine",
            "workers",
            "--workers",
            "1",
            "--max-batch",
            str(MAX_BATCH),
        ],
        ready_timeout_s=300,
    )
    try:
        with RolloutClient(proc.address) as client:
            out = []
            for prompt, seed in zip(PROMPTS, SEEDS, strict=True):
                r = client.generate([prompt], max_tokens=PARAMS["max_tokens"], temperature=1.0, seeds=[seed])
                out.append(list(r[0][0].token_ids))
            return out
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def references(tiny_dir: Path, perturbed_dir: Path) -> dict[str, list[list[int]]]:
    return {"old": reference(tiny_dir), "new": reference(perturbed_dir)}


class Hybrid:
    """A replica in hybrid mode over stand-in trainer ranks ``replica_rank * dp .. + dp - 1`` (the
    worker group holds the ranks of the replicas before it too, as veRL's does)."""

    def __init__(self, cfg: Any, replica_rank: int = 0) -> None:
        from specactor.verl.replica import SpecActorReplica
        from verl.utils.config import omega_conf_to_dataclass

        rollout_cfg = cfg.actor_rollout_ref.rollout
        dp = int(rollout_cfg.data_parallel_size)
        self.model_cfg = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
        first = replica_rank * dp
        self.ranks = [
            TrainerRank.remote(rollout_cfg, cfg.actor_rollout_ref.model, r) for r in range(first, first + dp)
        ]
        self.rank = self.ranks[0]
        self.replica = SpecActorReplica(
            replica_rank=replica_rank, config=rollout_cfg, model_config=self.model_cfg, gpus_per_node=dp
        )
        group = [None] * first + self.ranks  # the earlier replicas' ranks are never touched
        asyncio.run(self.replica.init_hybrid(types.SimpleNamespace(workers=group)))
        self.server = self.replica.servers[0]

    def generate(self, i: int, request_id: str) -> Any:
        return self.server.generate.remote(PROMPTS[i], {**PARAMS, "seed": SEEDS[i]}, request_id)

    def close(self) -> None:
        asyncio.run(self.replica.shutdown())
        for r in self.ranks:
            ray.kill(r)


@pytest.fixture(scope="module")
def hybrid(local_ray, tiny_dir: Path):
    h = Hybrid(compose(tiny_dir))
    yield h
    h.close()


def test_veRL_sequence_syncs_weights_token_for_token(hybrid: Hybrid, perturbed_dir: Path, references):
    assert references["old"] != references["new"]  # the perturbation changes the samples
    before = ray.get([hybrid.generate(i, f"before-{i}") for i in range(len(PROMPTS))])
    assert [list(o.token_ids) for o in before] == references["old"]
    assert {o.extra_fields["global_steps"] for o in before} == {0}

    kv = ray.get(hybrid.rank.kv_bytes.remote())
    assert kv > 0
    ray.get(hybrid.rank.release.remote())
    assert ray.get(hybrid.rank.kv_bytes.remote()) == 0
    assert ray.get(hybrid.server.health.remote())["kv_bytes"] == 0
    ray.get(hybrid.rank.resume.remote(["weights"]))
    waiting = hybrid.generate(0, "queued-while-released")  # waits for the sync, then runs on new weights
    ray.get(hybrid.rank.update_weights.remote(str(perturbed_dir / "hf"), STEPS))
    ray.get(hybrid.rank.resume.remote(["kv_cache"]))
    assert ray.get(hybrid.rank.kv_bytes.remote()) == kv
    assert ray.get(hybrid.server.health.remote())["kv_bytes"] == kv

    after = ray.get([hybrid.generate(i, f"after-{i}") for i in range(len(PROMPTS))])
    assert [list(o.token_ids) for o in after] == references["new"]
    assert {o.extra_fields["global_steps"] for o in after} == {STEPS}
    queued = ray.get(waiting)
    assert list(queued.token_ids) == references["new"][0] and queued.extra_fields["global_steps"] == STEPS
    assert ray.get(hybrid.rank.weight_version.remote()) == STEPS


def running(hybrid: Hybrid, n: int) -> None:
    """Wait until ``n`` samples run in the server: they are in flight, not queued behind a pause."""
    wait_until(lambda: ray.get(hybrid.server.health.remote())["running"] >= n, f"{n} running", timeout=60)


def test_in_flight_requests_finish_on_the_old_version_or_abort_never_mixed(
    hybrid: Hybrid, tiny_dir: Path, perturbed_dir: Path, references
):
    tiny, drifted = references["old"], references["new"]
    # the previous test left the drifted weights at STEPS; this sync goes back to tiny's
    flying = [hybrid.generate(i % 2, f"fly-{i}") for i in range(4)]
    running(hybrid, 4)
    ray.get(hybrid.rank.update_weights.remote(str(tiny_dir / "hf"), STEPS + 1))
    for i, out in enumerate(ray.get(flying)):
        # the sync drains: each sample finishes whole on the version it started with
        assert out.stop_reason == "completed" and out.extra_fields["global_steps"] == STEPS
        assert list(out.token_ids) == drifted[i % 2]

    # veRL's abort around a sync: running samples come back aborted with the old version's tokens
    flying = [hybrid.generate(i % 2, f"abort-{i}") for i in range(4)]
    running(hybrid, 4)
    ray.get(hybrid.server.abort_all_requests.remote())
    ray.get(hybrid.rank.update_weights.remote(str(perturbed_dir / "hf"), STEPS + 2))
    ray.get(hybrid.server.resume_generation.remote())
    for i, out in enumerate(ray.get(flying)):
        toks = list(out.token_ids)
        assert out.stop_reason == "aborted" and out.extra_fields["global_steps"] == STEPS + 1
        assert 0 < len(toks) < len(tiny[i % 2]) and toks == tiny[i % 2][: len(toks)]
    after = ray.get(hybrid.generate(1, "after-abort"))
    assert list(after.token_ids) == drifted[1] and after.extra_fields["global_steps"] == STEPS + 2


def test_two_ranks_per_replica_sync_together(local_ray, tiny_dir: Path, perturbed_dir: Path, references):
    """data_parallel_size=2: one server, both ranks' engines serve it; the server bumps the version
    once the last rank has loaded, and every sample, on either engine, comes from that version."""
    h = Hybrid(compose(tiny_dir, "actor_rollout_ref.rollout.data_parallel_size=2"), replica_rank=1)
    try:
        # the name the adapters look the server up by carries the replica's rank
        assert ray.get(ray.get_actor("specactor_server_1").pid.remote()) == ray.get(h.server.pid.remote())
        for r in h.ranks:
            ray.get(r.release.remote())
        assert [ray.get(r.kv_bytes.remote()) for r in h.ranks] == [0, 0]
        for r in h.ranks:
            ray.get(r.resume.remote(["weights"]))
        ray.get([r.update_weights.remote(str(perturbed_dir / "hf"), STEPS) for r in h.ranks])
        for r in h.ranks:
            ray.get(r.resume.remote(["kv_cache"]))
        assert [ray.get(r.weight_version.remote()) for r in h.ranks] == [STEPS, STEPS]
        assert min(ray.get(r.kv_bytes.remote()) for r in h.ranks) > 0
        steps = [ray.get(r.engine_steps.remote()) for r in h.ranks]
        outs = ray.get([h.generate(i % 2, f"dp-{i}") for i in range(8)])
        # 8 samples over two engines of 4 slots: both served some
        assert all(ray.get(r.engine_steps.remote()) > s for r, s in zip(h.ranks, steps, strict=True))
        assert [list(o.token_ids) for o in outs] == [references["new"][i % 2] for i in range(8)]
        assert {o.extra_fields["global_steps"] for o in outs} == {STEPS}
    finally:
        h.close()


def test_sync_errors_name_the_setting(hybrid: Hybrid, perturbed_dir: Path):
    import torch

    with pytest.raises(ray.exceptions.RayTaskError, match="wire_format='delta_flush'"):
        ray.get(hybrid.rank.update_weights.remote(str(perturbed_dir / "hf"), 9, wire_format="delta_flush"))
    with pytest.raises(ray.exceptions.RayTaskError, match="peft_config.*lora.merge=True"):
        ray.get(hybrid.rank.update_weights.remote(str(perturbed_dir / "hf"), 9, peft_config={"r": 8}))
    # a partial sync would mix versions: refused, naming what was left out (the server stays paused:
    # its engine may hold two versions, so nothing more is sampled from it)
    partial = [("model.norm.weight", torch.ones(hybrid_hidden(perturbed_dir)))]
    with pytest.raises(ray.exceptions.RayTaskError, match="left .* parameter\\(s\\) unloaded"):
        ray.get(hybrid.rank.update_with.remote(partial, 10))
    quantized = [("model.norm.weight", torch.ones(4, dtype=torch.int8))]
    with pytest.raises(ray.exceptions.RayTaskError, match="arrived as torch.int8"):
        ray.get(hybrid.rank.update_with.remote(quantized, 10))


def hybrid_hidden(model_dir: Path) -> int:
    import json

    return int(json.loads((model_dir / "hf" / "config.json").read_text())["hidden_size"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=2", "tensor_model_parallel_size=2"),
        ("actor_rollout_ref.rollout.dtype=bfloat16", "rollout.dtype=bfloat16"),
        ("actor_rollout_ref.model.lora_rank=8", "lora_rank=8"),
        ("actor_rollout_ref.model.lora.rank=16", "lora_rank=16"),
        ("drafter=model", "mode=vanilla drafter=model"),
        ("actor_rollout_ref.rollout.checkpoint_engine.backend=nccl", "checkpoint_engine.backend=nccl"),
    ],
)
def test_start_up_limits_name_the_setting(tiny_dir: Path, override: str, message: str):
    from specactor.verl.adapter import ServerAdapter
    from specactor.verl.replica import SpecActorReplica

    extra = ["actor_rollout_ref.rollout.n_gpus_per_node=2"] if "tensor" in override else []
    if override == "drafter=model":
        cfg = compose(tiny_dir, flags=("--mode", "vanilla", "--drafter", "model"))
    else:
        cfg = compose(tiny_dir, *extra, override)
    with pytest.raises(SettingsError, match=message):
        ServerAdapter(cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model, None)
    with pytest.raises(SettingsError, match=message):
        replica = SpecActorReplica(
            replica_rank=0, config=cfg.actor_rollout_ref.rollout, model_config=cfg.actor_rollout_ref.model
        )
        asyncio.run(replica.init_hybrid(types.SimpleNamespace(workers=[])))


def test_decoupled_is_a_start_up_error_and_merged_lora_is_allowed(tiny_dir: Path):
    from specactor.verl.adapter import ServerAdapter

    cfg = compose(tiny_dir, flags=("--mode", "decoupled"))
    with pytest.raises(SettingsError, match="mode=decoupled"):
        ServerAdapter(cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model, None)
    ok = compose(tiny_dir, "actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora.merge=True")
    ServerAdapter(ok.actor_rollout_ref.rollout, ok.actor_rollout_ref.model, None)
