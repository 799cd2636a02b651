"""``SpecActorReplica``: veRL's rollout replica for ``actor_rollout_ref.rollout.name=specactor``.

A replica is one server: a :class:`~specactor.verl.server.SpecActorServer` Ray actor that runs the
TypeScript rollout server as its child process. Standalone mode (a rollout with resources of its
own) needs no GPU: the server runs its in-process ONNX engine, or torch engine workers on CPU or
CUDA (``custom.specactor.engine=workers``), so veRL's agent loop drives the real replica on any
machine. The replica's lifecycle calls (``wake_up``, ``sleep``, ``abort_all_requests`` ...) are
the base class's fan-out to that actor.
"""

from __future__ import annotations

from typing import Any

import ray
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from .server import SpecActorServer


class SpecActorReplica(RolloutReplica):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(SpecActorServer)

    async def init_standalone(self) -> None:
        """Standalone: the server actor needs no resource pool of GPUs (the engine picks its device)."""
        self.rollout_mode = RolloutMode.STANDALONE
        await self.launch_servers()

    async def init_hybrid(self, worker_group: Any) -> None:
        raise NotImplementedError(
            "specactor: the hybrid engine (rollout on the trainer's GPUs, weights synced every step) is "
            "not supported by this version; run the rollout standalone, with resources of its own"
        )

    async def init_hybrid_colocated(self, worker_group: Any, resource_pool: Any) -> None:
        await self.init_hybrid(worker_group)

    async def init_colocated(self, resource_pool: Any) -> None:
        raise NotImplementedError("specactor: colocated rollout is not supported; run it standalone")

    def _server_name(self) -> str:
        role = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
        return f"specactor_server_{role}{self.replica_rank}{self.name_suffix}"

    async def launch_servers(self) -> None:
        # num_cpus=0: the actor only relays calls; the server process it starts uses the node's cores
        server = self.server_class.options(
            name=self._server_name(), max_concurrency=self.max_concurrency, num_cpus=0
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        self._server_address = await server.launch_server.remote()
        self.servers = [server]
        self._server_handle = server

    async def set_global_steps(self, global_steps: int) -> None:
        for server in self.servers:
            await server.set_global_steps.remote(global_steps)

    async def shutdown(self) -> None:
        """Stops the server process and the actor."""
        for server in self.servers:
            try:
                await server.shutdown.remote()
            finally:
                ray.kill(server)
        self.servers = []
