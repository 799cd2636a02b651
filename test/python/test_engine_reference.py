"""The ONNX engine against the naive path: transformers recomputing the whole sequence every step,
sampled by the Python sampler at absolute positions. Token for token, at temperature 1 and with
top-k/top-p, through continuous batching (admissions, releases that move slots, context growth)."""

import numpy as np
import pytest
import torch
from conftest import naive_decode, read_jsonl, run_cli, write_jsonl
from specactor.sampling import SamplingParams, derive_seed
from transformers import AutoModelForCausalLM

PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301], [5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [1, 400, 33]]


@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 1.0, -1), (0.8, 0.9, 30)])
def test_engine_matches_the_naive_path(tiny_dir, tmp_path, temperature, top_p, top_k):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt_ids": p} for p in PROMPTS])
    dst = tmp_path / "o.jsonl"
    run_cli(
        "rollout",
        "--model",
        str(tiny_dir),
        "--prompts",
        str(src),
        "--n",
        "2",
        "--max-tokens",
        "150",
        "--seed",
        "31",
        "--max-batch",
        "3",
        "--temperature",
        str(temperature),
        "--top-p",
        str(top_p),
        "--top-k",
        str(top_k),
        "--out",
        str(dst),
        "--quiet",
    )
    rows = read_jsonl(dst)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "hf", dtype=torch.float32).eval()
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    for r in rows:
        seed = derive_seed(31, r["prompt_index"], r["sample_index"])
        tokens, lps = naive_decode(model, PROMPTS[r["prompt_index"]], params, seed, 150, {2})
        assert r["token_ids"] == tokens
        np.testing.assert_allclose(r["logprobs"], lps, atol=1e-4)
    assert max(len(r["token_ids"]) for r in rows) > 64  # the context grew past a capacity granule
