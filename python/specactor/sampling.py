"""The seeded sampling rule (docs/SAMPLING.md), Python side.

Every random choice is a pure function of ``(seed, absolute position)``::

    x_t = argmax_v ( log p~(v | x_<t) + G(seed, t, v) ),   G = -log(-log U)

``U`` comes from Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC'11; the Random123 reference), which uses only 32-bit add, rotate and xor, so numpy,
torch and TypeScript produce identical bits:

    key     = (seed mod 2^32, floor(seed / 2^32) | domain << 21)      seed < 2^53, domain < 2^11
    counter = (t, v)                                                   absolute position, token id
    (x0, x1) = threefry2x32_20(counter, key)
    U = ((x0 >> 11) * 2^32 + x1 + 0.5) / 2^53                          53 bits, never 0 or 1

``p~`` is the processed distribution, computed in float64 in this order: temperature, top-k (ties at
the k-th value kept), top-p over the top-k-renormalised probabilities (sorted descending, ties by
token id, a token is kept while the mass before it is < P). Temperature 0 is argmax (ties: lowest
id). The argmax of ``z_v + G_v`` over kept tokens equals that of ``log p~ + G`` (normalisation is a
shared constant), so the normaliser is only needed for the returned log-prob.

Log-probs are of the processed distribution; at temperature 0 (where it is one-hot) they are of the
unprocessed model distribution, which is what a trainer can use.

The TypeScript twin lives in ``src/sampling/``; ``bridge/vectors/`` ties the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SEED = 2**53  # seeds must stay exactly representable in msgpack/JavaScript numbers
DOMAIN_SAMPLE = 0  # key domain of the sampling noise
DOMAIN_DERIVE = 1  # key domain of seed derivation (see derive_seed)

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_M32 = 0xFFFFFFFF


def threefry2x32(c0: np.ndarray, c1: np.ndarray, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32-20 of counters ``(c0, c1)`` (uint32 arrays) under key ``(k0, k1)``."""
    with np.errstate(over="ignore"):
        ks = (np.uint32(k0), np.uint32(k1), np.uint32((k0 ^ k1 ^ _PARITY) & _M32))
        x0 = np.asarray(c0, dtype=np.uint32) + ks[0]
        x1 = np.asarray(c1, dtype=np.uint32) + ks[1]
        for r in range(20):
            rot = _ROTATIONS[r % 8]
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(rot)) | (x1 >> np.uint32(32 - rot))) ^ x0
            if r % 4 == 3:
                i = (r + 1) // 4
                x0 = x0 + ks[i % 3]
                x1 = x1 + ks[(i + 1) % 3] + np.uint32(i)
    return x0, x1


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2^53), got {seed!r}")


def _key(seed: int, domain: int) -> tuple[int, int]:
    _check_seed(seed)
    seed = int(seed)
    return seed & _M32, (seed >> 32) | (domain << 21)


def bits53(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """53 random bits as exact float64 integers."""
    return (x0 >> np.uint32(11)).astype(np.float64) * 4294967296.0 + x1.astype(np.float64)


def uniforms(seed: int, position: int, tokens: np.ndarray) -> np.ndarray:
    """U(seed, position, v) for each token id v, float64 in (0, 1)."""
    k0, k1 = _key(seed, DOMAIN_SAMPLE)
    tokens = np.asarray(tokens, dtype=np.uint32)
    x0, x1 = threefry2x32(np.full(tokens.shape, position, dtype=np.uint32), tokens, k0, k1)
    return (bits53(x0, x1) + 0.5) / 2.0**53


def gumbel(seed: int, position: int, vocab_size: int) -> np.ndarray:
    """G(seed, position, v) = -log(-log U) for v in [0, vocab_size), float64."""
    return -np.log(-np.log(uniforms(seed, position, np.arange(vocab_size))))


def derive_seed(seed: int, a: int, b: int) -> int:
    """A child seed of ``seed`` for the pair ``(a, b)``, e.g. (prompt index, sample index).

    Threefry in the derivation key domain, so it never reuses a sampling key's noise; 53 bits.
    """
    k0, k1 = _key(seed, DOMAIN_DERIVE)
    x0, x1 = threefry2x32(np.array([a], np.uint32), np.array([b], np.uint32), k0, k1)
    return int(bits53(x0, x1)[0])


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0 (as in vLLM) disables top-k

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < -1:
            raise ValueError(f"top_k must be an integer >= -1 (-1 or 0 disables it), got {self.top_k!r}")


def _logsumexp(z: np.ndarray) -> float:
    m = float(np.max(z))
    return m + math.log(float(np.sum(np.exp(z - m))))


def processed_logprobs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """log p~ over the vocabulary (float64, -inf for removed tokens); see the module docstring."""
    z = np.asarray(logits, dtype=np.float64)
    if params.temperature == 0:
        out = np.full(z.shape, -np.inf)
        out[int(np.argmax(z))] = 0.0
        return out
    z = z / params.temperature
    keep = np.ones(z.shape, dtype=bool)
    if 0 < params.top_k < z.shape[0]:
        kth = np.partition(z, z.shape[0] - params.top_k)[z.shape[0] - params.top_k]
        keep &= z >= kth
    lse = _logsumexp(z[keep])
    if params.top_p < 1:
        ids = np.nonzero(keep)[0]
        order = ids[np.lexsort((ids, -z[ids]))]  # descending z, ties by ascending id
        probs = np.exp(z[order] - lse)
        before = np.concatenate(([0.0], np.cumsum(probs)[:-1]))
        dropped = order[before >= params.top_p]
        keep[dropped] = False
        lse = _logsumexp(z[keep])
    out = np.full(z.shape, -np.inf)
    out[keep] = z[keep] - lse
    return out


def sample(logits: np.ndarray, params: SamplingParams, seed: int, position: int) -> tuple[int, float]:
    """The token at absolute ``position`` and its log-prob, given the logits computed at position-1.

    The score compared is ``z_v + G_v`` (not ``log p~_v + G_v``): the same argmax, and the exact
    float64 expression the TypeScript sampler evaluates, so both pick the same token.
    """
    z = np.asarray(logits, dtype=np.float64)
    if params.temperature == 0:
        token = int(np.argmax(z))
        return token, -math.log(float(np.sum(np.exp(z - z[token]))))
    logp = processed_logprobs(z, params)
    kept = np.isfinite(logp)
    z = z / params.temperature
    scores = np.where(kept, z + gumbel(seed, position, z.shape[0]), -np.inf)
    token = int(np.argmax(scores))  # ties resolve to the lowest id
    return token, float(logp[token])
