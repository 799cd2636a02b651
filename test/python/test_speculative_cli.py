"""Speculative rollouts through the CLI return plain's tokens, for every drafter and temperature;
epochs reseed and (with drift) move the model; the summary reports acceptance and drift."""

from __future__ import annotations

import json

import pytest
from conftest import cli_rollout, read_jsonl, run_cli, write_jsonl

# repetitive prompts give the model-free drafters something to find
PROMPTS = [
    {"prompt_ids": [5, 6, 7, 5, 6, 7, 5, 6]},
    {"prompt_ids": [1, 17, 42, 99, 7]},
    {"prompt_ids": [1, 300, 301, 1, 300]},
]


def rollout(model_dir, tmp_path, name, *args):
    common = ("--n", "3", "--max-tokens", "48", "--seed", "4", "--max-batch", "5")
    raw, summary = cli_rollout(model_dir, PROMPTS, tmp_path, name, *common, *args)
    return [json.loads(line) for line in raw.splitlines()], summary


@pytest.mark.parametrize(
    "sampling", [("0", "1", "-1"), ("0.7", "0.95", "40"), ("1", "1", "-1")], ids=["t0", "t0.7", "t1"]
)
@pytest.mark.parametrize("drafter", ["ngram", "suffix", "model"])
def test_vanilla_equals_plain(tiny_dir, tmp_path, drafter, sampling):
    t, p, k = sampling
    params = ("--temperature", t, "--top-p", p, "--top-k", k)
    plain, _ = rollout(tiny_dir, tmp_path, "plain", *params)
    # the policy as its own drafter costs as much as it saves: "off" keeps its chains long to test
    extra = ("--drafter-model", str(tiny_dir), "--draft-cost", "off") if drafter == "model" else ()
    spec, summary = rollout(
        tiny_dir,
        tmp_path,
        drafter,
        *params,
        "--mode",
        "vanilla",
        "--drafter",
        drafter,
        "--draft-len",
        "4",
        *extra,
    )
    assert [r["token_ids"] for r in spec] == [r["token_ids"] for r in plain]
    d = summary["drafter"]
    assert d["name"] == drafter and d["errors"] == 0 and d["verify_steps"] > 0
    assert "mean_accepted_per_verify_step" in d
    if drafter == "model":  # the policy drafting for itself with the same noise: accepted whole
        assert d["acceptance_rate"] > 0.95
        assert set(d["metrics"]) == {"kappa", "cost"}
    assert summary["engine_steps"] < sum(len(r["token_ids"]) for r in spec)


def test_epochs_reseed_and_drift_moves_the_model(tiny_dir, tmp_path):
    rows, summary = rollout(
        tiny_dir,
        tmp_path,
        "e",
        "--epochs",
        "2",
        "--drift",
        "0.05",
        "--mode",
        "vanilla",
        "--drafter",
        "suffix",
    )
    assert [r["epoch"] for r in rows] == [0] * 9 + [1] * 9
    from specactor.sampling import derive_seed

    assert rows[0]["seed"] == derive_seed(4, 0, 0)
    assert rows[9]["seed"] == derive_seed(derive_seed(4, 2**32 - 1, 1), 0, 0)
    assert [e["epoch"] for e in summary["per_epoch"]] == [0, 1]
    kl = summary["per_epoch"][1]["kl_from_previous"]
    assert 0 < kl < 1, kl
    assert summary["per_epoch"][0]["model"] != summary["per_epoch"][1]["model"]
    # the epoch-1 model is the drifted one: plain on it gives the same tokens as speculation did
    plain, _ = rollout(tiny_dir, tmp_path, "p", "--epochs", "2", "--drift", "0.05")
    assert [r["token_ids"] for r in plain] == [r["token_ids"] for r in rows]


def test_smollm2_vanilla_equals_plain(smollm2_dir, tmp_path):
    """A shorter exactness check on the real model: chat prompts, T=1, every model-free drafter."""
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt_ids": [1, 520, 9531, 198, 504, 3458, 314, 216, 33, 34, 35, 30]},
            {"prompt_ids": [1, 4093, 198, 6121, 282, 253, 2150, 30, 2, 198, 1, 520, 9531, 198]},
        ],
    )
    outs = {}
    for mode in ("plain", "ngram", "suffix"):
        out = tmp_path / f"{mode}.jsonl"
        extra = () if mode == "plain" else ("--mode", "vanilla", "--drafter", mode)
        run_cli(
            "rollout",
            "--model",
            str(smollm2_dir),
            "--prompts",
            str(prompts),
            "--n",
            "2",
            "--max-tokens",
            "40",
            "--seed",
            "11",
            "--max-batch",
            "4",
            "--out",
            str(out),
            "--quiet",
            *extra,
        )
        outs[mode] = [r["token_ids"] for r in read_jsonl(out)]
    assert outs["ngram"] == outs["plain"] and outs["suffix"] == outs["plain"]
