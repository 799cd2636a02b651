"""Tokenisation for the TypeScript side (called through pythonia, off the hot path)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _tokenizer(hf_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir)


def encode_chat(hf_dir: str, prompts: list[str]) -> list[list[int]]:
    """Each prompt as one user turn under the model's chat template, ready for the assistant."""
    tok = _tokenizer(hf_dir)
    out = []
    for p in prompts:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        out.append(tok.encode(text, add_special_tokens=False))
    return out


def decode(hf_dir: str, token_ids: list[list[int]]) -> list[str]:
    tok = _tokenizer(hf_dir)
    return [tok.decode(ids, skip_special_tokens=True) for ids in token_ids]
