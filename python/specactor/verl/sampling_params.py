"""veRL's sampling parameters -> one SpecActor ``generate`` request.

veRL's agent loops send vLLM-style dicts: ``temperature, top_p, top_k (-1 off), repetition_penalty,
logprobs``, often no ``max_tokens``, and the tool agent loop adds ``stop_token_ids``. What we
implement is translated; what we do not implement raises :class:`UnsupportedSamplingParams` naming
the key, so veRL fails loudly instead of training on samples drawn from another distribution.
Keys that only shape vLLM's text output (we return token ids) are accepted at their defaults.

Response budget, as veRL's vLLM server computes it:
``max_tokens = sampling_params["max_tokens"]`` if given, else
``min(response_length, prompt_length + response_length - len(prompt_ids))``; then clamped to
``[1, max_context - len(prompt_ids)]``. A prompt that leaves no room is sent unclamped, so the
server's own ``invalid_request`` message (prompt length, budget, context) reaches veRL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class UnsupportedSamplingParams(ValueError):
    """A sampling parameter SpecActor does not implement (or a value it cannot honour)."""


# keys -> the only value we can honour (anything else is an explicit error)
_FIXED: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "min_p": 0.0,
    "min_tokens": 0,
    "n": 1,
    "best_of": None,
    "ignore_eos": False,
    "stop": None,
    "bad_words": None,
    "logit_bias": None,
    "allowed_token_ids": None,
    "prompt_logprobs": None,
    "guided_decoding": None,
    "structured_outputs": None,
}
# keys about text output or bookkeeping: token ids and log-probs come back whatever they say
_IGNORED = {
    "logprobs",
    "detokenize",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "output_kind",
    "extra_args",
}
_USED = {"temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "stop_token_ids", "seed"}


@dataclass(frozen=True)
class GenerateRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop_token_ids: list[int] | None
    seed: int | None


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None or (not a and not b)
    if isinstance(b, bool) or isinstance(a, bool):
        return bool(a) == bool(b)
    if isinstance(b, (int, float)) and isinstance(a, (int, float)):
        return float(a) == float(b)
    return (not a and not b) or a == b


def translate(
    prompt_ids: Sequence[int],
    sampling_params: Mapping[str, Any],
    *,
    prompt_length: int,
    response_length: int,
    max_context: int,
) -> GenerateRequest:
    params = dict(sampling_params or {})
    for key, value in params.items():
        if key in _USED or key in _IGNORED:
            continue
        if key in _FIXED:
            if not _same(value, _FIXED[key]):
                raise UnsupportedSamplingParams(
                    f"specactor does not implement sampling parameter {key}={value!r} "
                    f"(only {_FIXED[key]!r}); exact speculative sampling covers temperature, top_k, top_p"
                )
            continue
        raise UnsupportedSamplingParams(f"specactor does not know sampling parameter {key}={value!r}")
    ids = [int(t) for t in prompt_ids]
    if "max_tokens" in params and params["max_tokens"] is not None:
        max_tokens = int(params["max_tokens"])
    elif "max_new_tokens" in params and params["max_new_tokens"] is not None:
        max_tokens = int(params["max_new_tokens"])
    else:
        max_tokens = min(response_length, prompt_length + response_length - len(ids))
    room = max_context - len(ids)
    if room >= 1:
        max_tokens = max(1, min(max_tokens, room))
    else:
        max_tokens = max(1, max_tokens)
    top_k = params.get("top_k")  # -1 and 0 both mean off, as in vLLM: the server's sampler knows both
    temperature = params.get("temperature")
    top_p = params.get("top_p")
    stop = params.get("stop_token_ids")
    seed = params.get("seed")
    return GenerateRequest(
        prompt_ids=ids,
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=-1 if top_k is None else int(top_k),
        stop_token_ids=sorted({int(t) for t in stop}) if stop else None,
        seed=None if seed is None else int(seed),
    )
