import json

"""Temperature 0 through our ONNX engine equals transformers' greedy ``generate`` on the prepared
``hf/`` checkpoint, with ``prompt_ids`` input and no Python reachable by the rollout process."""


import torch
from conftest import cli_rollout, no_python_env
from transformers import AutoModelForCausalLM

TINY_PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301], [5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
SMOLLM2_TEXTS = [
    "What is 17 times 23? Let's think step by step.",
    "Write a haiku about the sea.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?",
    "List three prime numbers greater than 100.",
]


def greedy_reference(model_dir, prompts, max_new_tokens):
    model = AutoModelForCausalLM.from_pretrained(model_dir / "hf", dtype=torch.float32).eval()
    out = []
    for ids in prompts:
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
        out.append(gen[0, len(ids) :].tolist())
    return out


def rollout_greedy(model_dir, prompts, max_tokens, tmp_path):
    args = ("--temperature", "0", "--max-tokens", str(max_tokens), "--seed", "0", "--max-batch", "4")
    rows_raw, _ = cli_rollout(
        model_dir,
        [{"prompt_ids": p} for p in prompts],
        tmp_path,
        "greedy",
        *args,
        env=no_python_env(tmp_path),
    )
    rows = [json.loads(line) for line in rows_raw.splitlines()]
    assert all(r["text"] is None for r in rows)
    return [r["token_ids"] for r in sorted(rows, key=lambda r: r["prompt_index"])]


def test_tiny_greedy_equals_transformers(tiny_dir, tmp_path):
    assert rollout_greedy(tiny_dir, TINY_PROMPTS, 64, tmp_path) == greedy_reference(
        tiny_dir, TINY_PROMPTS, 64
    )


def test_smollm2_greedy_equals_transformers(smollm2_dir, tmp_path, torch_threads):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir / "hf")
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
        for t in SMOLLM2_TEXTS
    ]
    prompt_ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    ours = rollout_greedy(smollm2_dir, prompt_ids, 64, tmp_path)
    ref = greedy_reference(smollm2_dir, prompt_ids, 64)
    assert ours == ref
    assert sum(len(r) for r in ref) >= 4 * 20, "the prompts should produce real continuations"
