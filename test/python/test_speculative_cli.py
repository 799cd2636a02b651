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
        assert set(d["metrics"]) == {"acceptance", "cost"}
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


def test_the_8bit_drafter_is_rederived_for_each_drifted_epoch(tiny_dir, tmp_path):
    """The default model drafter is the policy's 8-bit copy (q8), quantised again from each epoch's
    drifted weights: it stays exact and keeps agreeing with the policy it drafts for."""
    args = ("--temperature", "1", "--epochs", "2", "--drift", "0.05")
    plain, _ = rollout(tiny_dir, tmp_path, "p", *args)
    spec, summary = rollout(
        tiny_dir, tmp_path, "q", *args, "--mode", "vanilla", "--drafter", "model", "--draft-cost", "0.2"
    )
    assert [r["token_ids"] for r in spec] == [r["token_ids"] for r in plain]
    for e in summary["per_epoch"]:
        d = e["drafter"]
        assert d["errors"] == 0 and d["proposed_tokens"] > 0
        assert d["metrics"]["acceptance"] > 0.85, (e["epoch"], d)
    named, _ = rollout(
        tiny_dir, tmp_path, "n", *args, "--mode", "vanilla", "--drafter", "model", "--drafter-model", "q8"
    )
    assert [r["token_ids"] for r in named] == [r["token_ids"] for r in plain]


def test_compare_runs_named_model_drafters_side_by_side(tiny_dir, tmp_path):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "compare.json"
    common = ("compare", "--model", str(tiny_dir), "--prompts", str(src), "--n", "2", "--max-tokens", "24")
    run_cli(
        *common,
        "--epochs",
        "1",
        "--seed",
        "3",
        "--modes",
        "plain,ngram,model:q8,decoupled",
        "--json",
        str(out),
        "--quiet",
    )
    rows = json.loads(out.read_text())["comparison"]
    assert [r["mode"] for r in rows] == ["plain", "ngram", "model:q8", "decoupled"]
    for r in rows:
        assert r["exact_samples"] == r["samples"] == 6 and r["divergences"] == 0
        assert r["tokens_per_s"] > 0 and r["speedup"] > 0
    assert rows[2]["acceptance_rate"] > 0.5
    for modes, match in (
        ("plain,model:nope", "not a drafter of tiny"),
        ("plain,ngram:q8", "only the model drafter"),
    ):
        proc = run_cli(*common, "--modes", modes, check=False)
        assert proc.returncode != 0 and match in proc.stderr, proc.stderr


def test_decoupled_rollout_equals_plain_and_rejects_other_drafters(tiny_dir, tmp_path):
    params = ("--temperature", "1", "--top-p", "1", "--top-k", "-1", "--threads", "2")
    plain, _ = rollout(tiny_dir, tmp_path, "plain", *params)
    spec, summary = rollout(tiny_dir, tmp_path, "decoupled", *params, "--mode", "decoupled")
    assert [r["token_ids"] for r in spec] == [r["token_ids"] for r in plain]
    assert summary["mode"] == "decoupled"
    d = summary["drafter"]
    # tiny's drafter is as slow as tiny itself, so it seldom gets ahead here (see speculation.test.ts)
    assert d["name"] == "model" and d["errors"] == 0
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    for args, match in (
        (("--mode", "decoupled", "--drafter", "ngram"), "runs the model drafter"),
        (("--mode", "decoupled", "--drafter-threads", "0"), "--drafter-threads must be >= 1"),
        (("--mode", "fast"), "supported: plain, vanilla, decoupled"),
    ):
        proc = run_cli(
            "rollout",
            "--model",
            str(tiny_dir),
            "--prompts",
            str(src),
            "--out",
            str(tmp_path / "x.jsonl"),
            *args,
            check=False,
        )
        assert proc.returncode == 2 and match in proc.stderr, proc.stderr
