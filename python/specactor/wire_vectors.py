"""``python -m specactor.wire_vectors``: regenerate ``bridge/vectors/messages.json``.

Encoded bridge messages (PROTOCOL.md) that both codecs decode in their test suites: a valid message
of every client and server type, with the body it must decode to, and malformed ones, with the
error code that section 7's checks, in order, must name. The expected bodies are written from what
was encoded, not from a decoder, and every array in them is ``{"dtype", "shape", "data"}``. The
Python suite also checks that regenerating the file gives the committed content.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from .wire import DTYPES, PROTOCOL_VERSION, encode, pack

VECTORS = Path(__file__).resolve().parents[2] / "bridge" / "vectors" / "messages.json"

Frames = list[bytes]

PROMPTS = [[11, 12, 13], [21, 22]]
PROMPT_IDS = np.array([t for p in PROMPTS for t in p], np.int32)
PROMPT_LENGTHS = [len(p) for p in PROMPTS]
# log-probs that float32 cannot hold exactly: the decoded values are the float32 roundings
LOG_PROBS = np.array([-0.1, -2.5, -0.7, -1e-06, -3.3, -0.0, -12.75, -0.2, -5.125], np.float32)


def array_json(a: np.ndarray) -> dict[str, Any]:
    """An array as the vectors write it (float32 data as the doubles that equal its values)."""
    name = next(n for n, d in DTYPES.items() if a.dtype.newbyteorder("<") == d)
    data = [int(x) for x in a.ravel()] if name == "int32" else [float(x) for x in a.ravel()]
    return {"dtype": name, "shape": [int(d) for d in a.shape], "data": data}


def _b64(frames: Frames) -> list[str]:
    return [base64.b64encode(f).decode("ascii") for f in frames]


def _valid(
    name: str, direction: str, type: str, body: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    expected = dict(body)
    for key, a in (arrays or {}).items():
        expected[key] = array_json(a)
    return {
        "name": name,
        "direction": direction,
        "frames": _b64(encode(type, body, arrays)),
        "valid": True,
        "type": type,
        "body": expected,
        "error": None,
    }


def _invalid(name: str, direction: str, frames: Frames, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "direction": direction,
        "frames": _b64(frames),
        "valid": False,
        "type": None,
        "body": None,
        "error": error,
    }


def _generate_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "req-1",
        "prompt_lengths": PROMPT_LENGTHS,
        "n": 2,
        "max_tokens": 16,
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": 20,
        "seed": 1234,
        "history_key": "task-7",
        "stream": True,
    }
    body.update(over)
    return body


def _generate(**over: Any) -> Frames:
    """A generate's frames, with body keys replaced (a value of ``...`` removes the key)."""
    body = {k: v for k, v in _generate_body(**over).items() if v is not ...}
    return encode("generate", body, {"prompt_ids": PROMPT_IDS})


def _with_ref(type: str, body: dict[str, Any], key: str, ref: dict[str, Any], *raw: bytes) -> Frames:
    """Frames with a hand-written array reference (for the malformed ones)."""
    return [type.encode("ascii"), pack({**body, key: ref}), *raw]


def _entry(id: str, prompt: int, sample: int, num_tokens: int, finish: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"id": id, "prompt": prompt, "sample": sample, "num_tokens": num_tokens}
    if finish is None:
        return {**e, "finished": False}
    return {
        **e,
        "finished": True,
        "finish_reason": finish,
        "seed": 987654321 + 17 * prompt + sample,
        "weight_version": 3,
        "engine_steps": 2 * num_tokens + 1,
        "accepted_draft_tokens": num_tokens // 2,
        "draft_tokens": num_tokens,
    }


OUTPUT_ENTRIES = [
    _entry("req-1", 0, 1, 2),  # a streaming request's partial delta
    _entry("req-1", 1, 0, 3, "stop"),
    _entry("req-2", 0, 0, 4, "length"),
]
OUTPUT_TOKENS = np.array([101, 102, 103, 104, 0, 201, 202, 203, 204], np.int32)


def _outputs(entries: list[dict[str, Any]], tokens: np.ndarray, log_probs: np.ndarray) -> Frames:
    return encode("outputs", {"outputs": entries}, {"token_ids": tokens, "log_probs": log_probs})


def _client_valid() -> list[dict[str, Any]]:
    c = "client"
    g = {"prompt_ids": PROMPT_IDS}
    minimal = {"id": "req-min", "prompt_lengths": PROMPT_LENGTHS, "max_tokens": 8}
    return [
        _valid("hello", c, "hello", {"protocol": PROTOCOL_VERSION, "client": "specactor-python/0.1.0"}),
        _valid("hello_minimal", c, "hello", {"protocol": PROTOCOL_VERSION}),
        _valid("generate_two_prompts_stream", c, "generate", _generate_body(), g),
        _valid("generate_seed_nil", c, "generate", _generate_body(id="req-2", seed=None, stream=False), g),
        _valid("generate_seed_max", c, "generate", _generate_body(id="req-3", seed=2**53 - 1), g),
        _valid(
            "generate_temperature_int",
            c,
            "generate",
            _generate_body(id="req-4", temperature=1, top_p=1, history_key=None),
            g,
        ),
        _valid(
            "generate_whole_floats_in_int_fields",
            c,
            "generate",
            _generate_body(id="req-7", max_tokens=10.0, top_k=5.0, seed=1.0, n=2.0),
            g,
        ),
        _valid("generate_greedy", c, "generate", _generate_body(id="req-5", temperature=0.0, top_k=-1), g),
        _valid("generate_top_k_zero_is_off", c, "generate", _generate_body(id="req-8", top_k=0), g),
        _valid(
            "generate_stop_token_ids",
            c,
            "generate",
            _generate_body(id="req-9", stop_token_ids=[0, 7, 200]),
            g,
        ),
        _valid(
            "generate_stop_token_ids_nil", c, "generate", _generate_body(id="req-10", stop_token_ids=None), g
        ),
        _valid(
            "generate_stop_token_ids_empty", c, "generate", _generate_body(id="req-11", stop_token_ids=[]), g
        ),
        _valid(
            "generate_per_sample_seeds",
            c,
            "generate",
            _generate_body(id="req-12", seeds=[0, 1, 2**53 - 1, 77]),
            g,
        ),
        _valid("generate_seeds_nil", c, "generate", _generate_body(id="req-13", seeds=None), g),
        _valid("generate_minimal", c, "generate", minimal, g),
        _valid("generate_id_128_bytes", c, "generate", {**minimal, "id": "é" * 64}, g),
        _valid(
            "generate_one_prompt_one_token",
            c,
            "generate",
            {"id": "x", "prompt_lengths": [1], "max_tokens": 1},
            {"prompt_ids": np.array([0], np.int32)},
        ),
        _valid(
            "generate_unknown_key_ignored",
            c,
            "generate",
            {**minimal, "id": "req-6", "priority": {"level": 3}},
            g,
        ),
        _valid("abort", c, "abort", {"ids": ["req-1", "req-2"]}),
        _valid("abort_none", c, "abort", {"ids": []}),
        _valid("health", c, "health", {}),
        _valid("stats", c, "stats", {}),
        _valid("ping", c, "ping", {"t": 12.5}),
        _valid("ping_any_t", c, "ping", {"t": [1, "two", None, {"three": 3.0}]}),
        _valid("ping_no_t", c, "ping", {}),
        _valid("pause_drain", c, "pause", {"mode": "drain"}),
        _valid("pause_abort", c, "pause", {"mode": "abort"}),
        _valid("pause_default", c, "pause", {}),
        _valid("bump_version", c, "bump", {"version": 4}),
        _valid("bump_nil", c, "bump", {"version": None}),
        _valid("bump_default", c, "bump", {}),
        _valid("resume", c, "resume", {}),
        _valid("shutdown_drain", c, "shutdown", {"drain": True}),
        _valid("shutdown_now", c, "shutdown", {"drain": False}),
        _valid("shutdown_default", c, "shutdown", {}),
        _valid("release_memory", c, "release_memory", {}),
        _valid("restore_memory", c, "restore_memory", {}),
        _valid("clear_kv", c, "clear_kv", {}),
    ]


def _server_valid() -> list[dict[str, Any]]:
    s = "server"
    stats = {
        "uptime_s": 12.25,
        "weight_version": 3,
        "engine_steps": 1000,
        "seq_steps": 2500,
        "generated_tokens": 4000,
        "peak_batch": 16,
        "running": 2,
        "queued": 1,
        "clients": 1,
        "requests_accepted": 10,
        "requests_finished": 7,
        "requests_aborted": 1,
        "requests_failed": 0,
        "clients_lost": 0,
        "bad_messages": 2,
        "dropped_messages": 0,
        "backlog_peak": 0,
        "drafter": None,
    }
    health = {
        "status": "ok",
        "protocol": PROTOCOL_VERSION,
        "weight_version": 3,
        "running": 2,
        "queued": 1,
        "clients": 1,
        "uptime_s": 12.25,
        "engine": "reference",
    }
    abort_entries = [_entry("req-3", 0, 0, 0, "abort"), _entry("req-3", 1, 1, 1, "abort")]
    step = {
        "step_id": 7,
        "seqs": [
            {
                "seq": 1,
                "num_append": 2,
                "trie_parents": [-1, 0],
                "temperature": 1,
                "top_p": 1,
                "top_k": -1,
                "seed": 5,
                "max_emit": 3,
                "stop_ids": [4, 8],
            }
        ],
    }
    return [
        _valid("welcome", s, "welcome", _welcome()),
        _valid("accepted", s, "accepted", {"id": "req-1", "seed": 1234, "samples": 4}),
        _valid("accepted_seed_max", s, "accepted", {"id": "req-3", "seed": 2**53 - 1, "samples": 1}),
        _valid(
            "outputs_partial_stop_length",
            s,
            "outputs",
            {"outputs": OUTPUT_ENTRIES},
            {"token_ids": OUTPUT_TOKENS, "log_probs": LOG_PROBS},
        ),
        _valid(
            "outputs_abort",
            s,
            "outputs",
            {"outputs": abort_entries},
            {"token_ids": np.array([7], np.int32), "log_probs": np.array([-0.5], np.float32)},
        ),
        _valid(
            "outputs_empty",
            s,
            "outputs",
            {"outputs": []},
            {"token_ids": np.zeros(0, np.int32), "log_probs": np.zeros(0, np.float32)},
        ),
        _valid("aborted", s, "aborted", {"ids": ["req-1"], "unknown": ["req-9", "never-seen"]}),
        _valid("health_reply", s, "health", health),
        _valid("stats_reply", s, "stats", stats),
        _valid("pong", s, "pong", {"t": 12.5}),
        _valid("pong_no_t", s, "pong", {}),
        _valid("paused", s, "paused", {"weight_version": 3}),
        _valid("bumped", s, "bumped", {"weight_version": 4}),
        _valid("resumed", s, "resumed", {"weight_version": 4}),
        _valid("bye", s, "bye", {}),
        _valid("memory_released", s, "memory_released", {"kv_bytes": 0}),
        _valid("memory_restored", s, "memory_restored", {"kv_bytes": 2**40 + 4096}),
        _valid("kv_cleared", s, "kv_cleared", {"sequences": 3}),
        _valid(
            "error_request",
            s,
            "error",
            {
                "code": "invalid_request",
                "message": "prompt 1 exceeds the context",
                "id": "req-7",
                "type": "generate",
            },
        ),
        _valid("error_minimal", s, "error", {"code": "not_paused", "message": "bump while running"}),
        _valid("error_nil_id", s, "error", {"code": "bad_message", "message": "x", "id": None, "type": None}),
        _valid(
            "step_worker_type",
            s,
            "step",
            step,
            {"append_ids": np.array([5, 6], np.int32), "trie_tokens": np.array([9, 10], np.int32)},
        ),
    ]


def _bad_frame() -> list[dict[str, Any]]:
    c, s = "client", "server"
    ids = PROMPT_IDS.tobytes()
    base = {k: v for k, v in _generate_body().items() if k != "prompt_ids"}

    def ref(**r: Any) -> dict[str, Any]:
        return {"frame": 2, "dtype": "int32", "shape": [len(PROMPT_IDS)], **r}

    return [
        _invalid("no_frames", c, [], "bad_frame"),
        _invalid("one_frame", c, [b"ping"], "bad_frame"),
        _invalid("empty_type", c, [b"", pack({})], "bad_frame"),
        _invalid("non_ascii_type", c, ["pïng".encode(), pack({})], "bad_frame"),
        _invalid("control_char_in_type", c, [b"ping\n", pack({})], "bad_frame"),
        _invalid("type_over_32_bytes", c, [b"p" * 33, pack({})], "bad_frame"),
        _invalid(
            "ref_frame_out_of_range",
            c,
            _with_ref("generate", base, "prompt_ids", ref(frame=3), ids),
            "bad_frame",
        ),
        _invalid(
            "ref_frame_is_the_body",
            c,
            _with_ref("generate", base, "prompt_ids", ref(frame=1), ids),
            "bad_frame",
        ),
        _invalid(
            "ref_frame_not_int",
            c,
            _with_ref("generate", base, "prompt_ids", ref(frame="2"), ids),
            "bad_frame",
        ),
        _invalid(
            "ref_frame_missing",
            c,
            _with_ref("generate", base, "prompt_ids", {"dtype": "int32", "shape": [5]}, ids),
            "bad_frame",
        ),
        _invalid("unreferenced_extra_frame", c, [*encode("ping", {}), b"\x00\x00\x00\x00"], "bad_frame"),
        _invalid("unreferenced_frame_after_ref", c, [*_generate(), ids], "bad_frame"),
        _invalid("unreferenced_frame_ref_missing", c, [b"generate", pack(base), ids], "bad_frame"),
        _invalid(
            "byte_length_mismatch",
            c,
            _with_ref("generate", base, "prompt_ids", ref(), ids + b"\x00"),
            "bad_frame",
        ),
        _invalid(
            "unknown_dtype",
            c,
            _with_ref("generate", base, "prompt_ids", ref(dtype="int64"), ids + ids),
            "bad_frame",
        ),
        _invalid(
            "negative_shape", c, _with_ref("generate", base, "prompt_ids", ref(shape=[-5]), ids), "bad_frame"
        ),
        _invalid(
            "shape_not_a_list", c, _with_ref("generate", base, "prompt_ids", ref(shape=5), ids), "bad_frame"
        ),
        _invalid(
            "frame_referenced_twice",
            s,
            [
                b"outputs",
                pack(
                    {
                        "outputs": [_entry("req-1", 0, 0, 1, "stop")],
                        "token_ids": {"frame": 2, "dtype": "int32", "shape": [1]},
                        "log_probs": {"frame": 2, "dtype": "float32", "shape": [1]},
                    }
                ),
                b"\x01\x00\x00\x00",
            ],
            "bad_frame",
        ),
    ]


def _unknown_type() -> list[dict[str, Any]]:
    c = "client"
    return [
        _invalid("unknown_type", c, [b"frobnicate", pack({})], "unknown_type"),
        _invalid("type_is_case_sensitive", c, [b"Generate", pack({})], "unknown_type"),
        _invalid("unknown_type_before_body", c, [b"frobnicate", b"\xc1"], "unknown_type"),
    ]


def _bad_message() -> list[dict[str, Any]]:
    c, s = "client", "server"
    g = _generate
    f32 = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    bad_outputs: list[tuple[str, list[Any]]] = [
        ("outputs_num_tokens_sum_mismatch", [*OUTPUT_ENTRIES[:2], {**OUTPUT_ENTRIES[2], "num_tokens": 3}]),
        (
            "outputs_finished_without_reason",
            [{k: v for k, v in OUTPUT_ENTRIES[1].items() if k != "finish_reason"}],
        ),
        ("outputs_unknown_finish_reason", [{**OUTPUT_ENTRIES[1], "finish_reason": "eos"}]),
        ("outputs_finished_not_bool", [{**OUTPUT_ENTRIES[0], "finished": 0}]),
        ("outputs_entry_not_a_map", [[1, 2]]),
    ]
    out = [
        _invalid("body_not_msgpack", c, [b"ping", b"\xc1"], "bad_message"),
        _invalid("body_empty_frame", c, [b"ping", b""], "bad_message"),
        _invalid("body_truncated", c, [b"ping", pack({"t": "abc"})[:-1]], "bad_message"),
        _invalid("body_a_list", c, [b"ping", pack([1, 2])], "bad_message"),
        _invalid("body_a_string", c, [b"health", pack("health")], "bad_message"),
        _invalid("body_nil", c, [b"health", pack(None)], "bad_message"),
        _invalid("body_int_keys", c, [b"ping", msgpack.packb({1: 2})], "bad_message"),
        _invalid("body_trailing_bytes", c, [b"ping", pack({}) + b"\x00"], "bad_message"),
        _invalid("body_two_maps", c, [b"hello", pack({"protocol": 1}) + pack({})], "bad_message"),
        _invalid("body_invalid_utf8", c, [b"ping", b"\x81\xa1t\xa2\xff\xfe"], "bad_message"),
        _invalid("generate_missing_max_tokens", c, g(max_tokens=...), "bad_message"),
        _invalid("generate_missing_id", c, g(id=...), "bad_message"),
        _invalid("generate_missing_prompt_ids", c, [b"generate", pack(_generate_body())], "bad_message"),
        _invalid("max_tokens_string", c, g(max_tokens="ten"), "bad_message"),
        _invalid("max_tokens_bool", c, g(max_tokens=True), "bad_message"),
        _invalid("max_tokens_float", c, g(max_tokens=10.5), "bad_message"),
        _invalid("max_tokens_zero", c, g(max_tokens=0), "bad_message"),
        _invalid("max_tokens_nil", c, g(max_tokens=None), "bad_message"),
        _invalid("n_zero", c, g(n=0), "bad_message"),
        _invalid("n_nil", c, g(n=None), "bad_message"),
        _invalid("temperature_negative", c, g(temperature=-1), "bad_message"),
        _invalid("temperature_bool", c, g(temperature=True), "bad_message"),
        _invalid("temperature_string", c, g(temperature="0.7"), "bad_message"),
        _invalid("temperature_nan", c, g(temperature=float("nan")), "bad_message"),
        _invalid("top_p_zero", c, g(top_p=0), "bad_message"),
        _invalid("top_p_over_one", c, g(top_p=1.5), "bad_message"),
        _invalid("top_k_minus_two", c, g(top_k=-2), "bad_message"),
        _invalid("top_k_float", c, g(top_k=5.5), "bad_message"),
        _invalid("stop_token_ids_negative", c, g(stop_token_ids=[3, -1]), "bad_message"),
        _invalid("stop_token_ids_not_a_list", c, g(stop_token_ids=3), "bad_message"),
        _invalid("stop_token_ids_float", c, g(stop_token_ids=[2.5]), "bad_message"),
        _invalid("seeds_over_2_53", c, g(seeds=[1, 2**53, 3, 4]), "bad_message"),
        _invalid("seeds_negative", c, g(seeds=[1, -1, 3, 4]), "bad_message"),
        _invalid("seed_2_pow_53", c, g(seed=2**53), "bad_message"),
        _invalid("seed_negative", c, g(seed=-1), "bad_message"),
        _invalid("seed_float", c, g(seed=1.5), "bad_message"),
        _invalid("history_key_empty", c, g(history_key=""), "bad_message"),
        _invalid("stream_int", c, g(stream=1), "bad_message"),
        _invalid("id_empty", c, g(id=""), "bad_message"),
        _invalid("id_over_128_bytes", c, g(id="é" * 65), "bad_message"),
        _invalid("id_not_a_string", c, g(id=7), "bad_message"),
        _invalid("prompt_lengths_sum_mismatch", c, g(prompt_lengths=[3, 3]), "bad_message"),
        _invalid("prompt_lengths_zero_entry", c, g(prompt_lengths=[0, 5]), "bad_message"),
        _invalid("prompt_lengths_not_a_list", c, g(prompt_lengths=5), "bad_message"),
        _invalid(
            "prompt_lengths_empty",
            c,
            encode(
                "generate", {**_generate_body(), "prompt_lengths": []}, {"prompt_ids": np.zeros(0, np.int32)}
            ),
            "bad_message",
        ),
        _invalid(
            "prompt_ids_not_a_reference",
            c,
            [b"generate", pack({**_generate_body(), "prompt_ids": [11, 12, 13, 21, 22]})],
            "bad_message",
        ),
        _invalid(
            "prompt_ids_float32",
            c,
            encode("generate", _generate_body(), {"prompt_ids": f32}),
            "bad_message",
        ),
        _invalid(
            "prompt_ids_rank_2",
            c,
            encode(
                "generate",
                {**_generate_body(), "prompt_lengths": [5]},
                {"prompt_ids": PROMPT_IDS.reshape(1, 5)},
            ),
            "bad_message",
        ),
        _invalid("hello_protocol_zero", c, encode("hello", {"protocol": 0}), "bad_message"),
        _invalid("hello_protocol_string", c, encode("hello", {"protocol": "1"}), "bad_message"),
        _invalid("hello_missing_protocol", c, encode("hello", {"client": "x"}), "bad_message"),
        _invalid("abort_ids_not_a_list", c, encode("abort", {"ids": "req-1"}), "bad_message"),
        _invalid("abort_empty_id", c, encode("abort", {"ids": ["req-1", ""]}), "bad_message"),
        _invalid("pause_unknown_mode", c, encode("pause", {"mode": "now"}), "bad_message"),
        _invalid("bump_negative", c, encode("bump", {"version": -1}), "bad_message"),
        _invalid("shutdown_drain_int", c, encode("shutdown", {"drain": 0}), "bad_message"),
        _invalid(
            "welcome_heartbeat_zero",
            s,
            encode("welcome", {**_welcome(), "heartbeat_interval_s": 0}),
            "bad_message",
        ),
        _invalid(
            "welcome_model_not_a_map", s, encode("welcome", {**_welcome(), "model": "tiny"}), "bad_message"
        ),
        _invalid(
            "accepted_seed_2_pow_53",
            s,
            encode("accepted", {"id": "r", "seed": 2**53, "samples": 1}),
            "bad_message",
        ),
        _invalid("paused_missing_weight_version", s, encode("paused", {}), "bad_message"),
        _invalid("memory_released_missing_kv_bytes", s, encode("memory_released", {}), "bad_message"),
        _invalid("memory_restored_negative", s, encode("memory_restored", {"kv_bytes": -1}), "bad_message"),
        _invalid("kv_cleared_float", s, encode("kv_cleared", {"sequences": 1.5}), "bad_message"),
        _invalid("error_missing_code", s, encode("error", {"message": "x"}), "bad_message"),
        _invalid("error_empty_code", s, encode("error", {"code": "", "message": "x"}), "bad_message"),
        _invalid(
            "outputs_log_probs_int32",
            s,
            _outputs(OUTPUT_ENTRIES, OUTPUT_TOKENS, OUTPUT_TOKENS.copy()),
            "bad_message",
        ),
    ]
    for name, entries in bad_outputs:
        n = sum(e["num_tokens"] for e in entries if isinstance(e, dict) and "num_tokens" in e)
        n = 9 if name == "outputs_num_tokens_sum_mismatch" else n
        out.append(_invalid(name, s, _outputs(entries, OUTPUT_TOKENS[:n], LOG_PROBS[:n]), "bad_message"))
    return out


def _welcome() -> dict[str, Any]:
    return {
        "protocol": PROTOCOL_VERSION,
        "server": "specactor-ts/0.1.0",
        "model": {"name": "tiny", "vocab_size": 256, "max_context": 512, "eos_ids": [0]},
        "heartbeat_interval_s": 2.5,
        "client_timeout_s": 30,
        "max_message_bytes": 64 * 2**20,
        "weight_version": 0,
    }


def build() -> dict[str, Any]:
    messages = [*_client_valid(), *_server_valid(), *_bad_frame(), *_unknown_type(), *_bad_message()]
    names = [m["name"] for m in messages]
    assert len(names) == len(set(names)), "vector names must be unique"
    return {
        "protocol": PROTOCOL_VERSION,
        "rule": "bridge/PROTOCOL.md; python/specactor/wire.py and src/bridge/wire.ts",
        "messages": messages,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main() -> None:
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(render())
    print(VECTORS, file=sys.stderr)


if __name__ == "__main__":
    main()
