"""Sampling through the real CLI and ONNX engine draws from the model's exact distribution.

Exact probabilities come from an independent path: the transformers checkpoint's float32 logits,
processed by the Python sampler's ``processed_logprobs`` (tied to TypeScript by the vectors).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import read_jsonl, run_cli, write_jsonl
from scipy import stats
from specactor.sampling import SamplingParams, processed_logprobs
from transformers import AutoModelForCausalLM

P_MIN = 0.001  # the tests fail below this p-value


def rollout(model_dir, prompt, n, max_tokens, tmp_path, *extra):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt_ids": prompt}])
    dst = tmp_path / "o.jsonl"
    proc = run_cli(
        "rollout",
        "--model",
        str(model_dir),
        "--prompts",
        str(src),
        "--n",
        str(n),
        "--max-tokens",
        str(max_tokens),
        "--max-batch",
        "64",
        "--out",
        str(dst),
        "--quiet",
        *extra,
    )
    return read_jsonl(dst), proc.stderr


def exact_sequences(model, prompt, params, eos, depth, threshold):
    """Every continuation of up to ``depth`` tokens (shorter if it ends in EOS) with probability >=
    ``threshold``, and its exact probability."""
    frontier = {(): 1.0}
    done: dict[tuple, float] = {}
    for _ in range(depth):
        prefixes = list(frontier)
        with torch.no_grad():
            batch = torch.tensor([prompt + list(p) for p in prefixes])
            logits = model(batch).logits[:, -1, :].numpy()
        nxt = {}
        for prefix, row in zip(prefixes, logits):
            probs = np.exp(processed_logprobs(row, params))
            for v in np.nonzero(probs * frontier[prefix] >= threshold)[0]:
                seq, p = prefix + (int(v),), frontier[prefix] * float(probs[v])
                (done if int(v) in eos else nxt)[seq] = p
        frontier = nxt
    done.update(frontier)
    return done


def chi_square(observed: Counter, exact: dict, n: int) -> float:
    keys = [k for k, p in exact.items() if p * n >= 5]
    obs = [observed.get(k, 0) for k in keys]
    exp = [exact[k] * n for k in keys]
    rest_obs, rest_exp = n - sum(obs), n - sum(exp)
    if rest_exp >= 5:
        obs.append(rest_obs)
        exp.append(rest_exp)
    else:
        exp[-1] += rest_exp
        obs[-1] += rest_obs
    assert len(keys) >= 5, "too few bins for a meaningful test"
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir / "hf", dtype=torch.float32).eval()


TINY_PROMPT = [1, 17, 42, 99, 7]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=1.0, top_k=5),
        SamplingParams(temperature=1.0, top_p=0.8),
        SamplingParams(temperature=0.8, top_p=0.9, top_k=20),
    ],
    ids=["t1", "t0.7", "topk5", "topp0.8", "mixed"],
)
def test_tiny_first_three_tokens_follow_the_exact_joint_distribution(tiny_dir, tiny_model, tmp_path, params):
    n = 3000
    rows, _ = rollout(
        tiny_dir,
        TINY_PROMPT,
        n,
        3,
        tmp_path,
        "--seed",
        "12345",
        "--temperature",
        str(params.temperature),
        "--top-p",
        str(params.top_p),
        "--top-k",
        str(params.top_k),
    )
    observed = Counter(tuple(r["token_ids"]) for r in rows)
    exact = exact_sequences(tiny_model, TINY_PROMPT, params, {2}, 3, threshold=1.0 / n)
    assert chi_square(observed, exact, n) > P_MIN
    # the reported log-probs are the processed distribution's
    for r in rows[:20]:
        seq = tuple(r["token_ids"])
        if seq in exact:
            assert sum(r["logprobs"]) == pytest.approx(math.log(exact[seq]), abs=1e-4)


def test_no_seed_samples_agree_with_probability_sum_of_p_squared(tiny_dir, tiny_model, tmp_path):
    pairs = 1500
    rows, err = rollout(tiny_dir, TINY_PROMPT, 2 * pairs, 1, tmp_path)
    rows.sort(key=lambda r: r["sample_index"])
    assert len({r["seed"] for r in rows}) == len(rows), "every sample gets its own seed"
    agree = sum(rows[2 * i]["token_ids"][0] == rows[2 * i + 1]["token_ids"][0] for i in range(pairs))
    with torch.no_grad():
        logits = tiny_model(torch.tensor([TINY_PROMPT])).logits[0, -1].numpy()
    q = float(np.sum(np.exp(processed_logprobs(logits, SamplingParams())) ** 2))
    assert q < 0.9, "the test needs a prompt whose first token is not near-certain"
    assert stats.binomtest(agree, pairs, q).pvalue > P_MIN, (agree, pairs, q)
    # and a second run without a seed draws a different rollout seed
    _, err2 = rollout(tiny_dir, TINY_PROMPT, 1, 1, tmp_path)
    seed_of = lambda text: text.split("seed=")[-1].split()[0]
    assert seed_of(err) != seed_of(err2)


def test_smollm2_first_token_follows_the_model(smollm2_dir, tmp_path, torch_threads):
    n = 2000
    prompt = [1, 520, 9531, 198]  # "<|im_start|>assistant\n": the model starts an answer
    rows, _ = rollout(smollm2_dir, prompt, n, 1, tmp_path, "--seed", "777")
    observed = Counter(tuple(r["token_ids"]) for r in rows)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir / "hf", dtype=torch.float32).eval()
    exact = exact_sequences(model, prompt, SamplingParams(), {0, 2}, 1, threshold=1.0 / n)
    assert chi_square(observed, exact, n) > P_MIN
