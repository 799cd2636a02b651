"""``ServerAdapter``: what veRL's trainer workers instantiate for ``(specactor, async)``.

In veRL's hybrid engine each trainer rank builds one of these to hand the policy's new weights to
the rollout after every update. This version serves standalone rollouts only, so building one is an
error that names the setting, raised where veRL starts its workers.
"""

from __future__ import annotations

from typing import Any

from verl.workers.rollout.base import BaseRollout


class ServerAdapter(BaseRollout):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "specactor: actor_rollout_ref.rollout.name=specactor with the hybrid engine (weights synced "
            "from the trainer ranks) is not supported by this version; run the rollout standalone"
        )

    async def resume(self, tags: list[str]) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError

    async def update_weights(
        self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    async def release(self) -> None:  # pragma: no cover
        raise NotImplementedError
