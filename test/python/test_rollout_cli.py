"""The rollout CLI end to end: reproducibility, batching invariance, text prompts, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import cli_rollout, run_cli

PROMPTS = [
    {"prompt_ids": [1, 17, 42, 99, 7]},
    {"prompt_ids": [1, 300, 301]},
    {"prompt_ids": [5, 6, 7, 8, 9, 10, 11, 12, 13]},
]


def rollout(model_dir, tmp_path, name, *args, prompts=PROMPTS):
    return cli_rollout(model_dir, prompts, tmp_path, name, *args)


def test_same_rollout_twice_is_byte_identical_and_another_seed_differs(tiny_dir, tmp_path):
    args = ("--n", "4", "--max-tokens", "40", "--temperature", "1", "--seed", "5")
    a, _ = rollout(tiny_dir, tmp_path, "a", *args)
    b, _ = rollout(tiny_dir, tmp_path, "b", *args)
    assert a == b
    c, _ = rollout(
        tiny_dir, tmp_path, "c", "--n", "4", "--max-tokens", "40", "--temperature", "1", "--seed", "6"
    )
    rows_a = [json.loads(x) for x in a.splitlines()]
    rows_c = [json.loads(x) for x in c.splitlines()]
    assert sum(x["token_ids"] != y["token_ids"] for x, y in zip(rows_a, rows_c)) >= len(rows_a) - 1


def test_output_format_and_seed_derivation(tiny_dir, tmp_path):
    raw, summary = rollout(tiny_dir, tmp_path, "f", "--n", "2", "--max-tokens", "8", "--seed", "9")
    rows = [json.loads(x) for x in raw.splitlines()]
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [
        (j, i) for j in range(3) for i in range(2)
    ]
    from specactor.sampling import derive_seed

    for r in rows:
        assert set(r) == {
            "epoch",
            "prompt_index",
            "sample_index",
            "seed",
            "token_ids",
            "text",
            "logprobs",
            "finish_reason",
        }
        assert r["epoch"] == 0
        assert r["seed"] == derive_seed(9, r["prompt_index"], r["sample_index"])
        assert len(r["logprobs"]) == len(r["token_ids"]) and all(lp <= 0 for lp in r["logprobs"])
        assert r["finish_reason"] == ("stop" if r["token_ids"][-1] == 2 else "length")
    assert summary["samples"] == 6 and summary["engine"].startswith("onnx-cpu")
    for key in ("generated_tokens", "wall_s", "tokens_per_s", "mean_batch_occupancy", "seed"):
        assert key in summary


@pytest.mark.parametrize("temperature", ["1", "0.7", "0"])
def test_max_batch_does_not_change_the_output(tiny_dir, tmp_path, temperature):
    prompts = PROMPTS * 5
    outs = {}
    for b in ("1", "7", "64"):
        raw, summary = rollout(
            tiny_dir,
            tmp_path,
            f"b{b}",
            "--n",
            "3",
            "--max-tokens",
            "48",
            "--seed",
            "77",
            "--temperature",
            temperature,
            "--max-batch",
            b,
            prompts=prompts,
        )
        outs[b] = [json.loads(x) for x in raw.splitlines()]
        if b != "1":
            assert summary["mean_batch_occupancy"] > 1
    for b in ("7", "64"):
        assert [r["token_ids"] for r in outs[b]] == [r["token_ids"] for r in outs["1"]]
        for x, y in zip(outs[b], outs["1"]):
            assert x["logprobs"] == pytest.approx(y["logprobs"], abs=1e-5)


def test_text_prompts_use_the_chat_template_and_outputs_are_decoded(tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    one = ("--n", "1", "--max-tokens", "10", "--seed", "1")
    text_prompts = [{"prompt": "How many clips did Natalia sell?"}, {"prompt_ids": [1, 2, 3]}]
    raw, _ = rollout(tiny_dir, tmp_path, "t", *one, prompts=text_prompts)
    rows = [json.loads(x) for x in raw.splitlines()]
    tok = AutoTokenizer.from_pretrained(tiny_dir / "hf")
    assert rows[0]["text"] == tok.decode(rows[0]["token_ids"], skip_special_tokens=True)
    # the text prompt was encoded exactly as the template says: same tokens as the ids form
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "How many clips did Natalia sell?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    raw2, _ = rollout(
        tiny_dir, tmp_path, "t2", *one, prompts=[{"prompt_ids": tok.encode(ids, add_special_tokens=False)}]
    )
    assert json.loads(raw2.splitlines()[0])["token_ids"] == rows[0]["token_ids"]


def bad(tmp_path, *args, prompts_text=None):
    src = tmp_path / "bad.jsonl"
    src.write_text(prompts_text if prompts_text is not None else json.dumps({"prompt_ids": [1, 2, 3]}) + "\n")
    out = tmp_path / "bad.out.jsonl"
    out.write_text("stale output of an earlier run\n")
    proc = run_cli(
        "rollout", "--model", "tiny", "--prompts", str(src), "--out", str(out), "--quiet", *args, check=False
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    return proc, lines, out


@pytest.mark.parametrize(
    "args, prompts_text, match",
    [
        ((), '{"prompt_ids": [1, 2]}\n{not json\n', "bad.jsonl:2: not valid JSON"),
        ((), '{"text": "x"}\n', 'expected a "prompt" string'),
        ((), '{"prompt_ids": [1, -4]}\n', "non-negative integers"),
        ((), '{"prompt_ids": [1, 999999]}\n', "outside the vocabulary"),
        (("--max-tokens", "10"), json.dumps({"prompt_ids": [5] * 1020}) + "\n", "exceeds the model context"),
        (("--model", "gpt-17"), None, "unknown model 'gpt-17'"),
        (("--temperature", "-1"), None, "temperature"),
        (("--temperature", "NaN"), None, "--temperature: expected a number"),
        (("--top-p", "0"), None, "top-p"),
        (("--top-k", "-5"), None, "top-k"),
        (("--n", "0"), None, "--n must be >= 1"),
        (("--max-tokens", "-3"), None, "--max-tokens must be >= 1"),
        (("--repetition-penalty", "1.2"), None, "repetition-penalty 1.2 is not supported"),
        (("--mode", "eagle"), None, "--mode eagle is not supported"),
        (("--mode", "vanilla"), None, "--mode vanilla needs --drafter"),
        (("--mode", "vanilla", "--drafter", "eagle"), None, "unknown drafter 'eagle'"),
        (("--drafter", "ngram"), None, "--drafter needs --mode vanilla"),
        (("--mode", "vanilla", "--drafter", "ngram", "--draft-len", "0"), None, "--draft-len must be >= 1"),
        (("--epochs", "0"), None, "--epochs must be >= 1"),
        (("--drift", "-0.1"), None, "--drift must be >= 0"),
        (
            ("--mode", "vanilla", "--drafter", "model", "--draft-cost", "-1"),
            None,
            "--draft-cost must be auto, off",
        ),
        (
            ("--mode", "vanilla", "--drafter", "model", "--drafter-model", "/nonexistent"),
            None,
            "--drafter-model /nonexistent: not a drafter of tiny",
        ),
        (
            ("--mode", "vanilla", "--drafter", "model", "--drafter-model", "layers8"),
            None,
            "not a drafter of tiny",
        ),
        (("--frequency-penalty", "0.5"), None, "unknown option --frequency-penalty"),
        (("--seed", "-1"), None, "--seed must be an integer"),
    ],
)
def test_bad_input_is_a_one_line_error_and_leaves_no_complete_output(
    tiny_dir, tmp_path, args, prompts_text, match
):
    proc, lines, out = bad(tmp_path, *args, prompts_text=prompts_text)
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("specactor: error:"), proc.stderr
    assert match in lines[0]
    assert not out.exists() or out.read_text() == "stale output of an earlier run\n"
    assert not (tmp_path / "bad.out.jsonl.partial").exists()


def test_help_lists_the_options():
    proc = run_cli("rollout", "--help")
    for opt in (
        "--model",
        "--prompts",
        "--n",
        "--max-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--seed",
        "--max-batch",
        "--mode",
        "--out",
        "--summary-json",
    ):
        assert opt in proc.stdout
    assert "prepare-model" in run_cli("--help").stdout


def test_prepare_model_removes_older_preparations(tmp_path):
    """A new preparation key replaces the older keys' directories of that model (and their drifted
    epochs), and leaves other models' and unrelated directories alone."""
    models = tmp_path / "models"
    stale = [models / "tiny-000000000000", models / "tiny-000000000000.drift0.05" / "epoch1"]
    kept = [models / "smollm2-000000000000", models / "tiny-notes"]
    for d in stale + kept:
        d.mkdir(parents=True)
        (d / "manifest.json").write_text("{}")
    proc = run_cli("prepare-model", "tiny", env={**os.environ, "SPECACTOR_CACHE": str(tmp_path)})
    fresh = Path(proc.stdout.strip().splitlines()[-1])
    assert fresh.parent == models and (fresh / "manifest.json").exists()
    assert not (models / "tiny-000000000000").exists()
    assert not (models / "tiny-000000000000.drift0.05").exists()
    assert all(d.exists() for d in kept)
    assert "older preparation of tiny" in proc.stderr
