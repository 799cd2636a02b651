"""The engine worker: a torch engine (:mod:`.engine`) served to the rollout server over the bridge
protocol's worker half (``bridge/PROTOCOL.md`` section 5, :mod:`.process`).

``python -m specactor.worker --connect ADDR --model DIR`` runs one as a process; a trainer that wants
to load weights directly builds a :class:`TorchEngine` and serves it with :class:`Worker`.
"""

from typing import Any

from .engine import EngineError, InvalidRequest, SeqResult, SeqStep, TorchEngine, WeightLoadError


def __getattr__(name: str) -> Any:
    # imported on first use: the engine alone must load where pyzmq is absent (test/gpu/)
    if name == "Worker":
        from .process import Worker

        return Worker
    raise AttributeError(name)


__all__ = [
    "EngineError",
    "InvalidRequest",
    "SeqResult",
    "SeqStep",
    "TorchEngine",
    "WeightLoadError",
    "Worker",
]
