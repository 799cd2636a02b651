"""``python -m specactor.vectors``: regenerate ``bridge/vectors/sampling.json``.

Known-answer vectors that tie the TypeScript and Python samplers: Threefry words, 53-bit uniforms,
derived seeds, and for a set of logits and parameters the processed distribution, the sample and
its log-prob. Both test suites load the file; the Python suite also checks that regenerating it
gives the committed content.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from .sampling import SamplingParams, derive_seed, processed_logprobs, sample, threefry2x32, uniforms

VECTORS = Path(__file__).resolve().parents[2] / "bridge" / "vectors" / "sampling.json"

# Random123's published known answers for threefry2x32_20: (counter, key) -> output
RANDOM123_KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


def _f32_logits(rng: np.random.Generator, v: int, scale: float) -> list[float]:
    return [float(x) for x in (rng.standard_normal(v) * scale).astype(np.float32)]


def build() -> dict:
    rng = np.random.default_rng(2026)
    threefry = [{"counter": list(c), "key": list(k), "out": list(o)} for c, k, o in RANDOM123_KAT]
    for _ in range(5):
        c = [int(x) for x in rng.integers(0, 2**32, 2)]
        k = [int(x) for x in rng.integers(0, 2**32, 2)]
        x0, x1 = threefry2x32(np.array([c[0]], np.uint32), np.array([c[1]], np.uint32), *k)
        threefry.append({"counter": c, "key": k, "out": [int(x0[0]), int(x1[0])]})
    uni = []
    for seed, pos, tok in [
        (0, 0, 0),
        (1, 0, 0),
        (42, 17, 3),
        (2**53 - 1, 2**32 - 1, 49151),
        (123456789012345, 1000, 777),
    ]:
        uni.append(
            {"seed": seed, "position": pos, "token": tok, "u": float(uniforms(seed, pos, np.array([tok]))[0])}
        )
    derived = [
        {"seed": s, "a": a, "b": b, "derived": derive_seed(s, a, b)}
        for s, a, b in [(0, 0, 0), (7, 3, 1), (2**53 - 1, 5, 9), (1234, 0, 65535)]
    ]
    cases = []
    configs = [
        (1.0, 1.0, -1),
        (0.7, 1.0, -1),
        (1.0, 1.0, 5),
        (1.0, 0.9, -1),
        (0.7, 0.95, 20),
        (0.0, 1.0, -1),
        (1.3, 0.5, 3),
        (1.0, 1.0, 64),
        (0.8, 0.9, 0),  # top-k 0 is off, as -1 (vLLM's convention)
    ]
    for ci, (t, p, k) in enumerate(configs):
        for scale in (1.0, 4.0):
            logits = _f32_logits(rng, 64, scale)
            if ci == 2:
                logits[10] = logits[11] = max(logits) + 1.0  # a tie at the top: both kept
            params = SamplingParams(temperature=t, top_p=p, top_k=k)
            seed, position = int(rng.integers(0, 2**53)), int(rng.integers(0, 5000))
            token, logprob = sample(np.array(logits, np.float32), params, seed, position)
            lp = processed_logprobs(np.array(logits, np.float32), params)
            cases.append(
                {
                    "logits": logits,
                    "params": {"temperature": t, "top_p": p, "top_k": k},
                    "seed": seed,
                    "position": position,
                    "processed_logprobs": [None if not math.isfinite(x) else float(x) for x in lp],
                    "token": token,
                    "logprob": logprob,
                }
            )
    return {
        "version": 1,
        "rule": "docs/SAMPLING.md; python/specactor/sampling.py and src/sampling/",
        "threefry2x32_20": threefry,
        "uniforms": uni,
        "derive_seed": derived,
        "samples": cases,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(render())
    print(VECTORS, file=sys.stderr)
