"""The Ray actor veRL talks to: one SpecActor rollout server (a node process) and its client.

veRL's agent loops call ``generate(prompt_ids, sampling_params, request_id, ...)`` on this actor
(token in, token out) and its replica fans the lifecycle calls out to it. The actor starts
``specactor serve`` as a child process told the actor's pid (``--parent-pid``), so the server exits
when the actor dies, however it dies, and talks to it over ZeroMQ with the async client.

Admission, as veRL's vLLM server does it: ``abort_all_requests`` closes a gate and pauses the
server with ``abort`` (running samples end ``aborted`` and keep the tokens generated so far); calls
arriving behind the closed gate wait for ``resume_generation``, or, with ``reject_request=True``,
return at once ``aborted`` with no tokens. The server is paused while any reason holds it (an
abort, released memory) and resumed when the last one is lifted, so a weight sync's
``release_kv_cache``/``resume_kv_cache`` inside an abort does not let queued calls slip through.

Hybrid engine (``hybrid=True``): the server starts no engine; each trainer rank serves the torch
engine of its device (a :class:`specactor.worker.Worker` in the rank's process) and registers it at
:meth:`worker_address`. A weight sync is ``begin_weight_sync`` (every rank; the first one drains
and pauses the server, so running samples finish on the old weights), each rank's load, then
``end_weight_sync`` (every rank; the last one bumps the server's weight version to veRL's
``global_steps`` and lifts the pause). No engine step runs while any rank loads, and every reply
reports the version its tokens were sampled with as ``extra_fields["global_steps"]``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from ..client import AsyncRolloutClient, Result
from ..server_process import ServerProcess
from .sampling_params import translate
from .seeds import SeedPolicy
from .settings import SpecActorSettings, check_hybrid, config_value, prepared_model_dir, resolve_model

log = logging.getLogger(__name__)

EXTRA_FIELD_KEYS = (
    "global_steps",
    "seed",
    "spec_num_draft_tokens",
    "spec_num_accepted_tokens",
    "spec_num_verify_steps",
)


class SpecActorServer:
    """One replica's server. Construct, then ``await launch_server()`` (returns its address)."""

    def __init__(
        self, config: Any, model_config: Any, replica_rank: int = 0, hybrid: bool = False, **_: Any
    ) -> None:
        self.config = config
        self.replica_rank = replica_rank
        self.hybrid = hybrid
        self.settings = SpecActorSettings.from_rollout_config(config)
        if hybrid:
            check_hybrid(self.settings, config, model_config)
        self.model = resolve_model(
            self.settings, config_value(model_config, "local_path") or config_value(model_config, "path")
        )
        self.prompt_length = int(config_value(config, "prompt_length", 512))
        self.response_length = int(config_value(config, "response_length", 512))
        self.free_cache_engine = bool(config_value(config, "free_cache_engine", True))
        self.seeds = SeedPolicy(
            reproducible=bool(config_value(config, "full_determinism", False)),
            seed=int(config_value(config, "seed", 0)),
            n=int(config_value(config, "n", 1)),
        )
        self.global_steps: int | None = None
        # (monotonic time, "arrive" | "done") per generate: how calls reach the server, for the check
        self.timeline: list[tuple[float, str]] = []
        self.process: ServerProcess | None = None
        self.client: AsyncRolloutClient | None = None
        self.max_context = 0
        self._holds: set[str] = set()  # reasons the server is paused: "abort", "memory", "weights"
        self.weights_synced = hybrid  # once true, replies report the server's weight version
        self._sync_version: int | None = None
        self._sync_done: set[int] = set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._rejecting = False
        self._control = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def launch_server(self) -> str:
        if self.process is not None:
            return self.address
        args = self.settings.serve_args(
            self.model, int(config_value(self.config, "max_num_seqs", 256)), hybrid=self.hybrid
        )
        loop = asyncio.get_running_loop()
        self.process = await loop.run_in_executor(
            None, lambda: ServerProcess(args, ready_timeout_s=self.settings.ready_timeout_s)
        )
        self.client = AsyncRolloutClient(self.process.address, timeout_s=120)
        welcome = await self.client.connect()
        self.max_context = int(welcome["model"]["max_context"])
        log.info("specactor server for replica %d on %s", self.replica_rank, self.process.address)
        return self.address

    @property
    def address(self) -> str:
        assert self.process is not None, "launch_server first"
        return self.process.address.removeprefix("tcp://")

    def get_server_address(self) -> str:
        return self.address

    def worker_address(self) -> str:
        """Where engine workers register (the endpoint the server bound and logged)."""
        assert self.process is not None, "launch_server first"
        for line in self.process.lines:
            m = re.search(r"workers connect to (tcp://\S+)", line)
            if m:
                return m.group(1)
        raise RuntimeError(f"the server logged no worker address:\n{self.process.log_tail()}")

    def model_dir(self) -> str:
        """The prepared model's directory, as the server resolved it (a name is prepared first)."""
        return str(prepared_model_dir(self.model))

    def take_timeline(self) -> list[tuple[float, str]]:
        """The calls' arrival and reply times since the last take (the check command's server span)."""
        out, self.timeline = self.timeline, []
        return out

    def server_pid(self) -> int | None:
        return None if self.process is None else self.process.proc.pid

    def pid(self) -> int:
        return os.getpid()

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None:
            process.stop(timeout_s=5)

    # -- generate ----------------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise ValueError(
                "specactor serves text-only models: image, video and audio inputs are not supported"
            )
        assert self.client is not None, "launch_server first"
        req = translate(
            prompt_ids,
            sampling_params,
            prompt_length=self.prompt_length,
            response_length=self.response_length,
            max_context=self.max_context,
        )
        while not self._gate.is_set():
            if self._rejecting:
                return TokenOutput(
                    token_ids=[], log_probs=[], stop_reason="aborted", extra_fields=self._extra(None)
                )
            await self._gate.wait()
        seed = req.seed if req.seed is not None else self.seeds.seed_for(request_id, req.prompt_ids)
        steps = self.global_steps
        self.timeline.append((time.monotonic(), "arrive"))
        results = await self.client.generate(
            [req.prompt_ids],
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            seeds=None if seed is None else [seed],
            stop_token_ids=req.stop_token_ids,
        )
        r = results[0][0]
        self.timeline.append((time.monotonic(), "done"))
        return TokenOutput(
            token_ids=list(r.token_ids),
            log_probs=[float(x) for x in r.log_probs],
            stop_reason="aborted" if r.finish_reason == "abort" else "completed",
            num_preempted=0,
            extra_fields=self._extra(r, steps),
        )

    def _extra(self, r: Result | None, steps: int | None = None) -> dict[str, Any]:
        """The same keys on every reply: veRL copies each key into the batch, for every sample."""
        steps = self.global_steps if r is None else steps
        if r is not None and self.weights_synced:
            # the version the server stamped on the sample's tokens: a sync bumps it to global_steps
            steps = r.weight_version
        return {
            "global_steps": -1 if steps is None else steps,
            "seed": -1 if r is None else r.seed,
            "spec_num_draft_tokens": 0 if r is None else r.draft_tokens,
            "spec_num_accepted_tokens": 0 if r is None else r.accepted_draft_tokens,
            "spec_num_verify_steps": 0 if r is None else r.engine_steps,
        }

    # -- what the replica fans out -----------------------------------------------------------------

    async def _hold(self, reason: str, mode: str = "drain") -> None:
        assert self.client is not None
        self._holds.add(reason)
        await self.client.pause(mode)

    async def _release(self, reason: str) -> None:
        assert self.client is not None
        self._holds.discard(reason)
        if not self._holds:
            await self.client.resume()

    async def abort_all_requests(self, reject_request: bool = False, **_: Any) -> dict[str, Any]:
        async with self._control:
            self._rejecting = reject_request
            self._gate.clear()
            before = (await self.client.health())["running"] if self.client else 0
            await self._hold("abort", "abort")
            return {"aborted_count": before, "request_ids": []}

    async def resume_generation(self) -> None:
        async with self._control:
            await self._release("abort")
            self._rejecting = False
            self._gate.set()

    async def sleep(self) -> None:
        if self.free_cache_engine:
            await self.release_kv_cache()

    async def wake_up(self, tags: list[str] | None = None) -> None:
        if self.free_cache_engine:
            await self.resume_kv_cache()

    async def release_kv_cache(self) -> None:
        """Drains what runs, then frees the engine's KV memory until ``resume_kv_cache``."""
        async with self._control:
            if "memory" in self._holds:
                return
            await self._hold("memory", "drain")
            assert self.client is not None
            await self.client.release_memory()

    async def resume_kv_cache(self) -> None:
        async with self._control:
            if "memory" not in self._holds:
                return
            assert self.client is not None
            await self.client.restore_memory()
            await self._release("memory")

    async def begin_weight_sync(self, version: int) -> None:
        """Every rank calls this before it loads ``version``; the first drains and pauses the server
        (running samples finish on the old weights; calls that arrive meanwhile wait)."""
        async with self._control:
            if self._sync_version == version:
                return
            if self._sync_version is not None:
                raise RuntimeError(
                    f"weight sync to {version} began while the sync to {self._sync_version} is unfinished"
                )
            self._sync_version, self._sync_done = version, set()
            await self._hold("weights", "drain")

    async def end_weight_sync(self, version: int, rank: int, ranks: int) -> int:
        """Every rank calls this once its engine holds ``version``; the last one bumps the server's
        weight version and lifts the pause. Returns the server's weight version."""
        async with self._control:
            if self._sync_version != version:
                raise RuntimeError(f"end_weight_sync({version}) with no sync to {version} begun")
            self._sync_done.add(rank)
            assert self.client is not None
            if len(self._sync_done) < ranks:
                return int((await self.client.health())["weight_version"])
            bumped = await self.client.bump(version)
            self.weights_synced = True
            await self.set_global_steps(version)
            self._sync_version = None
            await self._release("weights")
            return bumped

    async def clear_kv_cache(self) -> None:
        """We keep no prefix cache; this drops any engine state no running request holds."""
        assert self.client is not None
        await self.client.clear_kv()

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps
        self.seeds.set_global_steps(global_steps)

    async def start_profile(self, **_: Any) -> None:
        """Nothing to start: the server's Prometheus metrics (``metrics_port``) run all the time."""

    async def stop_profile(self) -> None:
        """See ``start_profile``."""

    async def stats(self) -> dict[str, Any]:
        assert self.client is not None
        return await self.client.stats()

    async def health(self) -> dict[str, Any]:
        assert self.client is not None
        return await self.client.health()
