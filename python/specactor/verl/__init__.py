"""SpecActor as a veRL rollout backend: ``actor_rollout_ref.rollout.name=specactor``.

Importing this module registers ``specactor`` in both of veRL's registries: the replica registry
(used by veRL's LLM-server manager and agent loop) and the rollout-class registry (trainer
workers). veRL imports it in every process through the ``verl.plugins`` entry point that
``pip install specactor[verl]`` declares, or through ``VERL_USE_EXTERNAL_MODULES=specactor.verl``.
veRL swallows a plugin's import errors (logged at debug level), so ``python -c "import
specactor.verl"`` is the way to see one.
"""

from __future__ import annotations

NAME = "specactor"


def _load_replica() -> type:
    from .replica import SpecActorReplica

    return SpecActorReplica


def register() -> None:
    """Idempotent: both registries map ``specactor`` to our classes."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(NAME, _load_replica)
    _ROLLOUT_REGISTRY[(NAME, "async")] = "specactor.verl.adapter.ServerAdapter"


register()
