"""The Python sampler against the shared vectors (which the TypeScript suite checks too)."""

import json

import numpy as np
import pytest
from specactor import vectors
from specactor.sampling import (
    SamplingParams,
    derive_seed,
    processed_logprobs,
    sample,
    threefry2x32,
    uniforms,
)


def test_vectors_file_is_what_the_rule_generates():
    assert vectors.VECTORS.read_text() == vectors.render(), "run `python -m specactor.vectors`"


def test_random123_known_answers():
    for c, k, o in vectors.RANDOM123_KAT:
        x0, x1 = threefry2x32(np.array([c[0]], np.uint32), np.array([c[1]], np.uint32), *k)
        assert (int(x0[0]), int(x1[0])) == o


def test_shared_vectors():
    v = json.loads(vectors.VECTORS.read_text())
    for u in v["uniforms"]:
        assert uniforms(u["seed"], u["position"], np.array([u["token"]]))[0] == u["u"]
    for d in v["derive_seed"]:
        assert derive_seed(d["seed"], d["a"], d["b"]) == d["derived"]
    for c in v["samples"]:
        p = c["params"]
        params = SamplingParams(temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"])
        logits = np.array(c["logits"], np.float32)
        lp = processed_logprobs(logits, params)
        want = np.array([-np.inf if x is None else x for x in c["processed_logprobs"]])
        np.testing.assert_allclose(lp, want, atol=1e-12)
        assert sample(logits, params, c["seed"], c["position"]) == pytest.approx(
            (c["token"], c["logprob"]), abs=1e-12
        )


def test_uniforms_are_open_interval_and_uniform():
    u = uniforms(99, 5, np.arange(200_000))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    assert hist.min() > 9000 and hist.max() < 11000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.2}, "top_p"),
        ({"top_k": -2}, "top_k"),
    ],
)
def test_bad_params_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        uniforms(2**53, 0, np.arange(3))


def test_top_k_zero_is_off_exactly_as_minus_one():
    v = json.loads(vectors.VECTORS.read_text())
    assert any(c["params"]["top_k"] == 0 for c in v["samples"]), "no top_k 0 vector"
    logits = (np.sin(np.arange(500) * 1.7) * 3).astype(np.float32)
    for t, p in [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)]:
        off, zero = SamplingParams(t, p, -1), SamplingParams(t, p, 0)
        np.testing.assert_array_equal(processed_logprobs(logits, zero), processed_logprobs(logits, off))
        for pos in range(50):
            assert sample(logits, zero, 11, pos) == sample(logits, off, 11, pos)
    flat = processed_logprobs(np.zeros(500, np.float32), SamplingParams(top_k=0))
    np.testing.assert_allclose(flat, -np.log(500), atol=1e-12)
