"""``SpecActorReplica``: veRL's rollout replica for ``actor_rollout_ref.rollout.name=specactor``.

A replica is one server: a :class:`~specactor.verl.server.SpecActorServer` Ray actor that runs the
TypeScript rollout server as its child process. Standalone mode (a rollout with resources of its
own) needs no GPU: the server runs its in-process ONNX engine, or torch engine workers on CPU or
CUDA (``custom.specactor.engine=workers``), so veRL's agent loop drives the real replica on any
machine. The replica's lifecycle calls (``wake_up``, ``sleep``, ``abort_all_requests`` ...) are
the base class's fan-out to that actor.

Hybrid mode (veRL's default: rollout on the trainer's GPUs): the server runs no engine of its own.
Each of the replica's trainer ranks holds our :class:`~specactor.verl.adapter.ServerAdapter` as
``rollout`` (veRL builds it in the rank's ``init_model``); ``init_hybrid`` launches the server on
the first rank's node and has every rank start a torch engine worker for its own device, in its own
process, registered at the server's worker address. Weights then go from the rank's training
engine into its torch engine by a device-memory copy; the server never carries them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from .server import SpecActorServer
from .settings import SettingsError, SpecActorSettings, check_hybrid


class SpecActorReplica(RolloutReplica):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(SpecActorServer)

    async def init_standalone(self) -> None:
        """Standalone: the server actor needs no resource pool of GPUs (the engine picks its device)."""
        self.rollout_mode = RolloutMode.STANDALONE
        await self.launch_servers()

    async def init_hybrid(self, worker_group: Any) -> None:
        """veRL's hybrid engine: the replica's trainer ranks ``worker_group.workers[world_size *
        replica_rank : world_size * (replica_rank + 1)]`` serve the engines (see the module doc)."""
        settings = SpecActorSettings.from_rollout_config(self.config)
        check_hybrid(settings, self.config, self.model_config)
        self.rollout_mode = RolloutMode.HYBRID
        self.workers = list(
            worker_group.workers[
                self.world_size * self.replica_rank : self.world_size * (self.replica_rank + 1)
            ]
        )
        if not self.workers:
            raise RuntimeError(
                f"specactor: replica {self.replica_rank} has no trainer rank to serve its engine"
            )
        # Ray's __ray_call__ runs a function on the actor instance itself: it reaches the adapter in
        # veRL's trainer worker (attribute ``rollout``, or inside a fused WorkerDict) as in a stand-in
        nodes = await asyncio.gather(*[w.__ray_call__.remote(_node_id) for w in self.workers])
        if len(set(nodes)) > 1:
            # the workers reach the server over the node's loopback
            raise SettingsError(
                f"specactor: replica {self.replica_rank}'s trainer ranks span {len(set(nodes))} nodes; "
                "actor_rollout_ref.rollout.data_parallel_size must fit on one node"
            )
        await self.launch_servers(node_id=nodes[0])
        address = await self._server_handle.worker_address.remote()
        model_dir = await self._server_handle.model_dir.remote()
        await asyncio.gather(
            *[
                w.__ray_call__.remote(
                    _start_rank_worker, address, model_dir, self._server_name(), len(self.workers)
                )
                for w in self.workers
            ]
        )

    async def init_hybrid_colocated(self, worker_group: Any, resource_pool: Any) -> None:
        await self.init_hybrid(worker_group)

    async def init_colocated(self, resource_pool: Any) -> None:
        raise NotImplementedError("specactor: colocated rollout is not supported; run it standalone")

    def _server_name(self) -> str:
        role = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
        return f"specactor_server_{role}{self.replica_rank}{self.name_suffix}"

    async def launch_servers(self, node_id: str | None = None) -> None:
        # num_cpus=0: the actor only relays calls; the server process it starts uses the node's cores
        options: dict[str, Any] = {"name": self._server_name(), "max_concurrency": self.max_concurrency}
        if node_id is not None:
            # the ranks' workers connect to the server over the node's loopback
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = self.server_class.options(num_cpus=0, **options).remote(
            config=self.config,
            model_config=self.model_config,
            replica_rank=self.replica_rank,
            hybrid=self.rollout_mode == RolloutMode.HYBRID,
        )
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


def _node_id(actor: Any) -> str:
    return ray.get_runtime_context().get_node_id()


def find_adapter(actor: Any) -> Any:
    """The :class:`ServerAdapter` a trainer-rank actor holds: ``actor.rollout`` (veRL's
    ``ActorRolloutRefWorker``, or a stand-in), or that of a worker inside a fused ``WorkerDict``."""
    from .adapter import ServerAdapter

    candidates = [actor, *getattr(actor, "worker_dict", {}).values()]
    for c in candidates:
        rollout = getattr(c, "rollout", None)
        if isinstance(rollout, ServerAdapter):
            return rollout
    raise RuntimeError(
        f"specactor: trainer worker {type(actor).__name__} holds no specactor ServerAdapter as `rollout` "
        "(was init_model run with actor_rollout_ref.rollout.name=specactor?)"
    )


def _start_rank_worker(actor: Any, address: str, model_dir: str, server_name: str, ranks: int) -> str:
    return find_adapter(actor).start_worker(address, model_dir, server_name, ranks)
