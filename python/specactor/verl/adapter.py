"""``ServerAdapter``: what veRL's trainer workers instantiate for ``(specactor, async)``.

In veRL's hybrid engine every trainer rank builds one of these in its ``init_model`` and keeps it as
``rollout``. :meth:`SpecActorReplica.init_hybrid <specactor.verl.replica.SpecActorReplica.init_hybrid>`
then calls :meth:`start_worker` in the rank's process (through Ray's ``__ray_call__``): the rank
builds a :class:`~specactor.worker.TorchEngine` on its own device and serves it to the replica's
server with a :class:`~specactor.worker.Worker`. The trainer's step sequence is then

    release()                 the server drains, pauses and frees the engines' KV cache
    resume(["weights"])       nothing to do: the engine's weights stay resident (see docs/VERL.md)
    update_weights(it, g)     every rank: begin_weight_sync(g) (the first pauses the server), load
                              the rank's tensors into its engine in place, end_weight_sync(g) (the
                              last bumps the server's weight version to g and lifts the pause)
    resume(["kv_cache"])      the engines re-allocate their KV cache and the server resumes

so no engine step mixes two weight versions and every reply reports the version it was sampled with.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from .settings import SettingsError, SpecActorSettings, check_hybrid

log = logging.getLogger(__name__)


class ServerAdapter(BaseRollout):
    def __init__(
        self, config: Any, model_config: Any, device_mesh: Any = None, replica_rank: int = -1, **_: Any
    ) -> None:
        super().__init__(config, model_config, device_mesh)
        self.settings = SpecActorSettings.from_rollout_config(self.config)
        check_hybrid(self.settings, self.config, self.model_config)
        rank = int(os.environ.get("RANK", "0"))
        # one replica per data-parallel group, as veRL's llm_server slices its worker group
        world = int(self.config.data_parallel_size or 1)
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self.ranks = world
        self.engine: Any = None
        self.worker: Any = None
        self.server_name: str | None = None
        self.server_handle: Any = None
        self.last_sync_s: float | None = None

    # -- started by the replica ----------------------------------------------------------------------

    def start_worker(self, address: str, model_dir: str, server_name: str, ranks: int) -> str:
        """Build this rank's engine on its device and register it at ``address``; returns the worker id."""
        from ..worker import TorchEngine, Worker

        if self.worker is not None:
            raise RuntimeError("specactor: this trainer rank already serves an engine worker")
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        dtype = str(self.config.dtype or "float32").removeprefix("torch.")
        max_batch, max_context = kv_capacity(self.config, self.settings, model_dir, device, dtype)
        self.engine = TorchEngine(
            model_dir,
            max_batch=max_batch,
            max_context=max_context,
            dtype=dtype,
            device=device,
            threads=self.settings.threads,
        )
        self.worker = Worker(self.engine, address)
        self.worker.start(timeout=120)
        self.server_name, self.ranks = server_name, ranks
        log.info("specactor engine worker %s on %s registered at %s", self.worker.worker_id, device, address)
        return str(self.worker.worker_id)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _server(self) -> Any:
        if self.server_handle is None:
            if self.server_name is None:
                raise RuntimeError(
                    "specactor: this trainer rank serves no engine yet (the replica's init_hybrid starts it)"
                )
            self.server_handle = ray.get_actor(self.server_name)
        return self.server_handle

    @property
    def leader(self) -> bool:
        return self.rollout_rank == 0

    # -- BaseRollout -----------------------------------------------------------------------------------

    async def resume(self, tags: list[str]) -> None:
        """``weights``: this rank's engine allocates its parameters again (``update_weights`` fills
        them; no step runs before). ``kv_cache``: the server restores the engines' KV memory and
        resumes."""
        if "weights" in tags and self.engine is not None:
            self.engine.restore_weights()
        if "kv_cache" in tags and self.leader:
            await self._server().wake_up.remote(tags=tags)

    async def release(self) -> None:
        """With ``free_cache_engine`` (veRL's default): the server drains, pauses and frees every
        engine's KV cache, and each rank frees its engine's weights, so training gets the memory back.
        Every rank asks the server (the first does it, the others wait for it under its lock) before
        it frees its own weights, so no step is running on them."""
        if not bool(getattr(self.config, "free_cache_engine", True)):
            return
        await self._server().sleep.remote()
        if self.engine is not None:
            self.engine.release_weights()

    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]],
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        **kwargs: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"specactor: update_weights(wire_format={wire_format!r}) is not supported, only full "
                "named tensors; set actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        if kwargs.get("peft_config") is not None:
            raise SettingsError(
                "specactor: update_weights got a LoRA adapter (peft_config); specactor loads full weights "
                "only: set actor_rollout_ref.model.lora.merge=True or train without LoRA"
            )
        if self.engine is None:
            self._server()  # raises: no worker was started
        version = int(global_steps) if global_steps is not None else self.engine.weight_version + 1
        server = self._server()
        t0 = time.perf_counter()
        await server.begin_weight_sync.remote(version)
        loaded: set[int] = set()
        self.engine.load_weights(self._checked(weights, loaded), version=version)
        missing = [n for n, p in self.engine._params.items() if id(p) not in loaded]
        if missing:
            # a partial load would leave the engine with two versions' weights
            raise RuntimeError(
                f"specactor: the weight sync to step {version} left {len(missing)} parameter(s) "
                f"unloaded ({', '.join(missing[:3])}...)"
            )
        await server.end_weight_sync.remote(version, self.rollout_rank, self.ranks)
        self.last_sync_s = time.perf_counter() - t0
        if self.leader and self.replica_rank == 0:
            log.info("specactor update_weights to step %d: %.2f s", version, self.last_sync_s)

    def _checked(
        self, weights: Iterable[tuple[str, torch.Tensor]], loaded: set[int]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        params = self.engine._params
        for name, tensor in weights:
            if not tensor.is_floating_point():
                raise SettingsError(
                    f"specactor: weight {name!r} arrived as {tensor.dtype}; the torch engine loads float "
                    "tensors only (quantized trainer weights are not supported)"
                )
            if name in params:
                loaded.add(id(params[name]))
            yield name, tensor


def kv_capacity(
    config: Any, settings: SpecActorSettings, model_dir: str, device: str, dtype: str
) -> tuple[int, int]:
    """(sequences, positions per sequence) of a rank's KV cache, from veRL's rollout settings.

    positions = ``max_model_len`` (else ``prompt_length + response_length``), at most the model's
    context; sequences = ``max_num_seqs`` (at most ``max_batch``), and on CUDA at most what fits in
    ``gpu_memory_utilization`` of the device after the weights::

        per_sequence = 2 * layers * kv_heads * head_dim * positions * bytes(dtype)
        sequences <= (utilization * total - weights) / per_sequence
    """
    meta = json.loads((Path(model_dir) / "onnx" / "model.json").read_text())
    wanted = getattr(config, "max_model_len", None) or (
        int(getattr(config, "prompt_length", 0) or 0) + int(getattr(config, "response_length", 0) or 0)
    )
    positions = min(int(meta["max_context"]), int(wanted) or int(meta["max_context"]))
    sequences = settings.batch(int(getattr(config, "max_num_seqs", 256) or 256))
    if device.startswith("cuda"):
        itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        per_sequence = 2 * meta["num_layers"] * meta["num_kv_heads"] * meta["head_dim"] * positions * itemsize
        weights = int(meta.get("num_parameters", 0)) * itemsize
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        budget = float(getattr(config, "gpu_memory_utilization", 0.5) or 0.5) * total - weights
        fits = int(budget // per_sequence)
        if fits < 1:
            raise ValueError(
                f"specactor: actor_rollout_ref.rollout.gpu_memory_utilization={config.gpu_memory_utilization} "
                f"leaves no room for one sequence of {positions} positions after the weights"
            )
        sequences = min(sequences, fits)
    return sequences, positions
