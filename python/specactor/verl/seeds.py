"""Which seed a veRL ``generate`` call samples with.

veRL sends no seed, and GRPO siblings arrive as separate, identical calls. Equal seeds would make
every sibling identical and silently zero GRPO's advantages, so by default each call gets a fresh
random seed, drawn by the server and reported back in ``extra_fields["seed"]``. Siblings still
share one history key (the server hashes the prompt tokens), so history drafters learn from them.

Reproducible rollouts use veRL's own switch, ``actor_rollout_ref.rollout.full_determinism=True``,
with ``actor_rollout_ref.rollout.seed=S``. Global step ``g`` then samples with
``S_g = S`` for ``g <= 0`` and ``S_g = derive_seed(S, 2^32 - 1, g)`` otherwise (the epoch seeds of
``specactor rollout --epochs``), and a call gets

- ``derive_seed(S_g, p // n, p % n)`` when its request id is veRL's deterministic ``det-{p}``, where
  ``p`` is the sample's row in veRL's batch (prompts repeated ``n = rollout.n`` times, interleaved):
  prompt ``p // n``, sample ``p % n``, exactly the seed ``specactor rollout --seed S`` gives that
  sample in epoch ``g``; every turn of a multi-turn trajectory keeps it (its positions move on, and
  the sampling key is (seed, absolute position));
- otherwise ``derive_seed(S_g, h(prompt), k)`` for the ``k``-th call (0-based) with these prompt
  tokens in this global step, ``h`` the first 32 bits of the prompt's BLAKE2b digest.

Either way two runs with one seed give the same responses per prompt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..sampling import derive_seed

_EPOCH_DOMAIN = 2**32 - 1
_DET_ID = re.compile(r"^det-(\d+)$")


def step_seed(seed: int, global_steps: int | None) -> int:
    if global_steps is None or global_steps <= 0:
        return seed
    return derive_seed(seed, _EPOCH_DOMAIN, int(global_steps) % 2**32)


def prompt_hash32(prompt_ids: Sequence[int]) -> int:
    digest = hashlib.blake2b(np.asarray(prompt_ids, dtype="<i8").tobytes(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class SeedPolicy:
    """Fresh seeds (``reproducible=False``: ``seed_for`` returns None and the server draws one) or
    the reproducible derivation of the module docstring."""

    def __init__(self, *, reproducible: bool, seed: int, n: int) -> None:
        if not 0 <= seed < 2**53:
            raise ValueError(f"actor_rollout_ref.rollout.seed must be in [0, 2^53), got {seed}")
        self.reproducible = reproducible
        self.seed = seed
        self.n = max(1, int(n))
        self._step: int | None = None
        self._calls: dict[int, int] = {}

    def set_global_steps(self, global_steps: int | None) -> None:
        if global_steps != self._step:
            self._step = global_steps
            self._calls.clear()

    def seed_for(self, request_id: str, prompt_ids: Sequence[int]) -> int | None:
        if not self.reproducible:
            return None
        base = step_seed(self.seed, self._step)
        m = _DET_ID.match(str(request_id))
        if m:
            row = int(m.group(1))
            return derive_seed(base, (row // self.n) % 2**32, row % self.n)
        h = prompt_hash32(prompt_ids)
        k = self._calls.get(h, 0)
        self._calls[h] = k + 1
        return derive_seed(base, h, k % 2**32)
