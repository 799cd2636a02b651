"""The Python wire codec against the shared message vectors (which the TypeScript suite checks too)."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import numpy as np
import pytest
from specactor import wire, wire_vectors

VECTORS = json.loads(wire_vectors.VECTORS.read_text())["messages"]

CLIENT_TYPES = {
    "hello",
    "generate",
    "abort",
    "health",
    "stats",
    "ping",
    "pause",
    "bump",
    "resume",
    "shutdown",
    "release_memory",
    "restore_memory",
    "clear_kv",
}
SERVER_TYPES = {
    "welcome",
    "accepted",
    "outputs",
    "aborted",
    "health",
    "stats",
    "pong",
    "paused",
    "bumped",
    "resumed",
    "memory_released",
    "memory_restored",
    "kv_cleared",
    "bye",
    "error",
}
WORKER_TYPES = {
    "register",
    "registered",
    "step",
    "step_result",
    "draft",
    "draft_result",
    "truncate",
    "release",
    "set_version",
    "heartbeat",
    "error",
}


def _frames(vector: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(f) for f in vector["frames"]]


def _same(got: Any, want: Any, path: str) -> None:
    """Exact equality; arrays as {"dtype", "shape", "data"}. A whole float decodes as an int (as in
    JavaScript), so numbers compare by value, never a bool for a number."""
    if isinstance(want, dict) and set(want) == {"dtype", "shape", "data"} and isinstance(got, np.ndarray):
        assert got.dtype == wire.DTYPES[want["dtype"]], path
        assert list(got.shape) == want["shape"], path
        expected = np.array(want["data"], dtype=wire.DTYPES[want["dtype"]]).reshape(want["shape"])
        assert got.tobytes() == expected.tobytes(), path  # bitwise: -0.0 and float32 roundings included
        return
    if isinstance(want, float):
        assert isinstance(got, (int, float)) and not isinstance(got, bool) and got == want, path
        assert isinstance(got, int) == want.is_integer(), f"{path}: whole floats decode as ints"
        return
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            _same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{path}[{i}]")
    else:
        assert got == want, path


def test_vectors_file_is_what_the_generator_produces() -> None:
    assert wire_vectors.VECTORS.read_text() == wire_vectors.render(), "run `python -m specactor.wire_vectors`"


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    frames = _frames(vector)
    if vector["valid"]:
        message = wire.decode(frames)
        assert message.type == vector["type"]
        _same(message.body, vector["body"], vector["name"])
    else:
        with pytest.raises(wire.WireError) as err:
            wire.decode(frames)
        assert err.value.code == vector["error"], str(err.value)


def test_vectors_cover_every_type_and_code() -> None:
    valid = {(v["direction"], v["type"]) for v in VECTORS if v["valid"]}
    assert {t for d, t in valid if d == "client"} == CLIENT_TYPES
    assert {t for d, t in valid if d == "server"} >= SERVER_TYPES
    codes = {v["error"] for v in VECTORS if not v["valid"]}
    assert codes == {"bad_frame", "unknown_type", "bad_message"}


def test_schema_knows_exactly_the_protocol_types() -> None:
    assert set(wire.SCHEMA) == CLIENT_TYPES | SERVER_TYPES | WORKER_TYPES


def test_round_trip_with_arrays() -> None:
    arrays = {
        "token_ids": np.array([1, -2, 2**31 - 1], np.int32),
        "log_probs": np.array([-0.1, -0.0, -1e-30], np.float32),
    }
    entries = [
        {"id": "a", "prompt": 0, "sample": 0, "num_tokens": 1, "finished": False},
        {
            "id": "a",
            "prompt": 0,
            "sample": 1,
            "num_tokens": 2,
            "finished": True,
            "finish_reason": "stop",
            "seed": 2**53 - 1,
            "weight_version": 0,
            "engine_steps": 3,
            "accepted_draft_tokens": 1,
        },
    ]
    frames = wire.encode("outputs", {"outputs": entries}, arrays)
    assert len(frames) == 4 and frames[0] == b"outputs"
    message = wire.decode(frames)
    assert message.body["outputs"] == entries
    for key, a in arrays.items():
        assert message.body[key].dtype == a.dtype and message.body[key].tobytes() == a.tobytes()


def test_round_trip_float64_any_shape_and_byte_order() -> None:
    a = np.arange(6, dtype=">f8").reshape(2, 3)  # big-endian input goes out little-endian
    frames = wire.encode("step", {"step_id": 1}, {"append_ids": a, "trie_tokens": np.zeros((0, 4), np.int32)})
    assert frames[2] == np.arange(6, dtype="<f8").tobytes() and frames[3] == b""
    body = wire.decode(frames).body
    np.testing.assert_array_equal(body["append_ids"], a)
    assert body["trie_tokens"].shape == (0, 4)


def test_generate_round_trip_and_defaults() -> None:
    frames = wire.encode(
        "generate",
        {"id": "r-1", "prompt_lengths": [2, 1], "max_tokens": 4, "seed": None},
        {"prompt_ids": np.array([5, 6, 7], np.int32)},
    )
    message = wire.decode(frames)
    assert message.body["prompt_ids"].tolist() == [5, 6, 7]
    assert not message.body["prompt_ids"].flags.writeable
    assert (message.get("n"), message.get("temperature"), message.get("top_p")) == (1, 1, 1)
    assert (message.get("top_k"), message.get("seed"), message.get("stream")) == (-1, None, False)
    assert message.get("max_tokens") == 4 and message.get("not_a_key") is None


def test_encode_rejects_other_dtypes_and_clashing_keys() -> None:
    with pytest.raises(ValueError, match="dtype"):
        wire.encode("outputs", {}, {"token_ids": np.array([1], np.int64)})
    with pytest.raises(ValueError, match="body key"):
        wire.encode("outputs", {"token_ids": 1}, {"token_ids": np.array([1], np.int32)})


def test_encode_packs_numpy_scalars_and_float_ints() -> None:
    frames = wire.encode(
        "generate", {"max_tokens": np.int64(3), "temperature": np.float32(0.5), "stream": np.True_}
    )
    body = msgpack.unpackb(frames[1])
    assert body == {"max_tokens": 3, "temperature": 0.5, "stream": True}
    assert type(body["max_tokens"]) is int and type(body["stream"]) is bool


def test_bodies_hold_no_binary_or_extension_values() -> None:
    with pytest.raises(wire.WireError, match="bytes") as err:
        wire.decode([b"ping", wire.pack({"t": b"\x00"})])
    assert err.value.code == "bad_message"
    with pytest.raises(wire.WireError) as err:
        wire.decode([b"ping", msgpack.packb({"t": msgpack.ExtType(5, b"x")})])
    assert err.value.code == "bad_message"


def test_checks_run_in_protocol_order() -> None:
    # an unknown type wins over a bad body; a bad frame wins over a missing field
    with pytest.raises(wire.WireError) as err:
        wire.decode([b"nope", b"\xc1", b"extra"])
    assert err.value.code == "unknown_type"
    with pytest.raises(wire.WireError) as err:
        wire.decode([b"generate", wire.pack({}), b"extra"])
    assert err.value.code == "bad_frame"
    # a reference's dtype and rank are field checks (step 5): a bad_message, not a bad_frame
    with pytest.raises(wire.WireError) as err:
        wire.decode(
            wire.encode(
                "outputs",
                {"outputs": []},
                {"token_ids": np.zeros(0, np.float64), "log_probs": np.zeros(0, np.float32)},
            )
        )
    assert err.value.code == "bad_message"


def test_worker_types_are_only_frame_checked() -> None:
    assert wire.decode([b"heartbeat", wire.pack({"anything": [1, 2]})]).body == {"anything": [1, 2]}
    with pytest.raises(wire.WireError) as err:
        wire.decode([b"step_result", wire.pack({}), b"\x00"])
    assert err.value.code == "bad_frame"
