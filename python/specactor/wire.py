"""The bridge wire codec (``bridge/PROTOCOL.md``, protocol version 1), Python side.

A message is a list of frames: the ASCII type name, a msgpack map, then raw array frames that the
body refers to with ``{"frame": k, "dtype": D, "shape": [...]}``. :func:`encode` builds one,
:func:`decode` checks one against the schema of PROTOCOL.md section 7 (in that section's order, so
that the first failure names the same error code as the TypeScript codec) and returns the body with
the array references replaced by numpy arrays.

The schema is the table :data:`SCHEMA` (message type -> field specs); the few functions below it only
interpret that table. ``bridge/vectors/messages.json`` (``python -m specactor.wire_vectors``) holds
encoded messages that both codecs' test suites decode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_TYPE_BYTES = 32
SEED_LIMIT = 2**53  # seeds are ints in [0, 2^53)

DTYPES: dict[str, np.dtype] = {
    "int32": np.dtype("<i4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}


class WireError(Exception):
    """A message that breaks the wire contract; ``code`` is the PROTOCOL.md error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------------
# Field specs: the vocabulary of the schema table (PROTOCOL.md section 7 notation).


@dataclass(frozen=True)
class Int:
    """``int``: a msgpack integer (never a bool or a float) in ``[ge, lt)``, or one of ``also``."""

    ge: int | None = None
    lt: int | None = None
    also: tuple[int, ...] = ()


@dataclass(frozen=True)
class Float:
    """``float``: an int or a float (never a bool) within the bounds that are given."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class Str:
    """``str(lo..hi)``: a string of ``lo..hi`` UTF-8 bytes."""

    lo: int = 0
    hi: int | None = None


@dataclass(frozen=True)
class OneOf:
    """One of a few string constants."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class AnyValue:
    pass


@dataclass(frozen=True)
class Map:
    """Any map; its contents are not checked."""


@dataclass(frozen=True)
class Nullable:
    """``nil|X``."""

    inner: Spec


@dataclass(frozen=True)
class ListOf:
    """``[X]`` with at least ``min_len`` items."""

    item: Spec
    min_len: int = 0


@dataclass(frozen=True)
class Ref:
    """``ref(dtype, rank)``: an array reference, decoded to a numpy array."""

    dtype: str | None
    rank: int | None


@dataclass(frozen=True)
class F:
    """One body key: its spec, whether it is required, and its default when it is absent."""

    spec: Spec
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class SumEquals:
    """``sum(items[*].key) == shape(ref)[0]`` for every ref (``key`` None: the items themselves)."""

    items: str
    key: str | None
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Record:
    """A map with known keys (unknown keys are ignored).

    ``when`` adds keys required only when a bool key has a given value (output entries' ``finished``).
    ``checked`` False: only the array references are recognised (section 5 worker types, for now).
    """

    fields: Mapping[str, F] = field(default_factory=dict)
    when: tuple[str, object, Mapping[str, F]] | None = None
    checks: tuple[SumEquals, ...] = ()
    checked: bool = True


Spec = Int | Float | Str | OneOf | Bool | AnyValue | Map | Nullable | ListOf | Ref | Record


def _opt(spec: Spec, default: Any = None) -> F:
    return F(spec, required=False, default=default)


ID = Str(1, 128)
COUNT = Int(ge=0)
VERSION = Int(ge=0)
EMPTY = Record()

OUTPUT_ENTRY = Record(
    {"id": F(ID), "prompt": F(COUNT), "sample": F(COUNT), "num_tokens": F(COUNT), "finished": F(Bool())},
    when=(
        "finished",
        True,
        {
            "finish_reason": F(OneOf(("stop", "length", "abort"))),
            "seed": F(Int(ge=0)),
            "weight_version": F(VERSION),
            "engine_steps": F(COUNT),
            "accepted_draft_tokens": F(COUNT),
            "draft_tokens": _opt(COUNT, 0),
        },
    ),
)


def _worker(*refs: str) -> Record:
    return Record({r: _opt(Ref(None, None)) for r in refs}, checked=False)


# The schema: PROTOCOL.md section 7, one entry per message type (sections 3, 4 and 5).
SCHEMA: dict[str, Record] = {
    # client -> server (section 3)
    "hello": Record({"protocol": F(Int(ge=1)), "client": _opt(Str(0, 256))}),
    "generate": Record(
        {
            "id": F(ID),
            "prompt_ids": F(Ref("int32", 1)),
            "prompt_lengths": F(ListOf(Int(ge=1), min_len=1)),
            "n": _opt(Int(ge=1), 1),
            "max_tokens": F(Int(ge=1)),
            "temperature": _opt(Float(ge=0), 1),
            "top_p": _opt(Float(gt=0, le=1), 1),
            "top_k": _opt(Int(ge=0, also=(-1,)), -1),  # -1 and 0 both disable top-k
            "seed": _opt(Nullable(Int(ge=0, lt=SEED_LIMIT))),
            "history_key": _opt(Nullable(Str(1, 256))),
            "stream": _opt(Bool(), False),
            "stop_token_ids": _opt(Nullable(ListOf(Int(ge=0)))),
            "seeds": _opt(Nullable(ListOf(Int(ge=0, lt=SEED_LIMIT)))),
        },
        checks=(SumEquals("prompt_lengths", None, ("prompt_ids",)),),
    ),
    "abort": Record({"ids": F(ListOf(ID))}),
    "health": EMPTY,  # the reply of the same name is only checked to be a map
    "stats": EMPTY,  # likewise
    "ping": Record({"t": _opt(AnyValue())}),
    "pause": Record({"mode": _opt(OneOf(("drain", "abort")), "drain")}),
    "bump": Record({"version": _opt(Nullable(Int(ge=0)))}),
    "resume": EMPTY,
    "shutdown": Record({"drain": _opt(Bool(), True)}),
    # also server -> engine worker (section 5), answered with the same replies
    "release_memory": EMPTY,
    "restore_memory": EMPTY,
    "clear_kv": EMPTY,
    # server -> client (section 4)
    "welcome": Record(
        {
            "protocol": F(Int(ge=1)),
            "server": F(Str()),
            "model": F(Map()),
            "heartbeat_interval_s": F(Float(gt=0)),
            "client_timeout_s": F(Float(gt=0)),
            "max_message_bytes": F(Int(ge=1)),
            "weight_version": F(VERSION),
        }
    ),
    "accepted": Record({"id": F(ID), "seed": F(Int(ge=0, lt=SEED_LIMIT)), "samples": F(Int(ge=1))}),
    "outputs": Record(
        {
            "outputs": F(ListOf(OUTPUT_ENTRY)),
            "token_ids": F(Ref("int32", 1)),
            "log_probs": F(Ref("float32", 1)),
        },
        checks=(SumEquals("outputs", "num_tokens", ("token_ids", "log_probs")),),
    ),
    "aborted": Record({"ids": F(ListOf(Str())), "unknown": F(ListOf(Str()))}),
    "pong": Record({"t": _opt(AnyValue())}),
    "paused": Record({"weight_version": F(VERSION)}),
    "bumped": Record({"weight_version": F(VERSION)}),
    "resumed": Record({"weight_version": F(VERSION)}),
    "memory_released": Record({"kv_bytes": F(COUNT)}),
    "memory_restored": Record({"kv_bytes": F(COUNT)}),
    "kv_cleared": Record({"sequences": F(COUNT)}),
    "bye": EMPTY,
    "error": Record(
        {
            "code": F(Str(1, 64)),
            "message": F(Str()),
            "id": _opt(Nullable(Str())),
            "type": _opt(Nullable(Str())),
        }
    ),
    # server <-> engine worker (section 5): known names, only the frame and reference checks
    "register": _worker(),
    "registered": _worker(),
    "step": _worker("append_ids", "trie_tokens"),
    "step_result": _worker("token_ids", "log_probs"),
    "draft": _worker("append_ids"),
    "draft_result": _worker("token_ids"),
    "truncate": _worker(),
    "release": _worker(),
    "set_version": _worker(),
    "heartbeat": _worker(),
}


@dataclass(frozen=True)
class Message:
    """A decoded message: its type and body, array references replaced by (read-only) arrays."""

    type: str
    body: dict[str, Any]

    def get(self, key: str) -> Any:
        """The body's value for ``key``, or the schema's default when the key is absent."""
        if key in self.body:
            return self.body[key]
        spec = SCHEMA[self.type].fields.get(key)
        return spec.default if spec is not None else None


# ---------------------------------------------------------------------------------------------------
# Encoding


def _pack_default(obj: object) -> object:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a message body (arrays go in `arrays`)")


def pack(value: object) -> bytes:
    """msgpack as the protocol wants it: str as str, bytes as bin, floats as float64."""
    packed: bytes = msgpack.packb(value, use_bin_type=True, default=_pack_default)
    return packed


def encode(type: str, body: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> list[bytes]:
    """Frames for one message: ``[type, msgpack(body), raw arrays...]``.

    Each entry of ``arrays`` becomes a body key holding an array reference to its own frame
    (little-endian, C-ordered; int32, float32 or float64). The body is not checked against the schema
    (:func:`decode` does that), so that a test can build a bad message on purpose.
    """
    name = type.encode("ascii")
    full = dict(body)
    raw: list[bytes] = []
    for key, array in (arrays or {}).items():
        if key in full:
            raise ValueError(f"array {key!r} is also a body key")
        a = np.asarray(array)
        dtype = next((n for n, d in DTYPES.items() if a.dtype.newbyteorder("<") == d), None)
        if dtype is None:
            raise ValueError(f"array {key!r}: dtype {a.dtype} is not one of {', '.join(DTYPES)}")
        full[key] = {"frame": 2 + len(raw), "dtype": dtype, "shape": [int(d) for d in a.shape]}
        raw.append(np.ascontiguousarray(a, dtype=DTYPES[dtype]).tobytes())
    return [name, pack(full), *raw]


# ---------------------------------------------------------------------------------------------------
# Decoding: section 7's steps, in order


def _bad(path: str, why: str) -> WireError:
    return WireError("bad_message", f"{path}: {why}")


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain(value: Any, path: str) -> Any:
    """Maps, lists, strings, numbers, bools and nil only: no binary blobs, no extension types.

    Returns the value with whole-valued floats as ints: JavaScript cannot tell 10.0 from 10, so the
    protocol does not either (an ``int`` field accepts 10.0, a ``float`` field 10).
    """
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _bad(path, "map keys must be strings")
            value[k] = _plain(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            value[i] = _plain(v, f"{path}[{i}]")
    elif isinstance(value, float):
        if value.is_integer():
            return int(value)
    elif not (value is None or isinstance(value, (bool, int, str))):
        raise _bad(path, f"{type(value).__name__} values are not allowed in a body")
    return value


def _read_ref(ref: dict[str, Any], path: str, frames: Sequence[bytes], used: set[int]) -> np.ndarray:
    k, dtype, shape = ref.get("frame"), ref.get("dtype"), ref.get("shape")
    if not _is_int(k) or not 2 <= k < len(frames):
        raise WireError("bad_frame", f"{path}: frame {k!r} is not an array frame of this message")
    if k in used:
        raise WireError("bad_frame", f"{path}: frame {k} is referenced twice")
    used.add(k)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WireError("bad_frame", f"{path}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise WireError("bad_frame", f"{path}: shape {shape!r} is not a list of ints >= 0")
    want = math.prod(shape) * DTYPES[dtype].itemsize
    if len(frames[k]) != want:
        raise WireError("bad_frame", f"{path}: frame {k} holds {len(frames[k])} bytes, shape needs {want}")
    return np.frombuffer(frames[k], dtype=DTYPES[dtype]).reshape(shape)


def _check(spec: Spec, v: object, path: str) -> None:
    match spec:
        case Int(ge=ge, lt=lt, also=also):
            if not _is_int(v):
                raise _bad(path, f"expected an int, got {type(v).__name__}")
            assert isinstance(v, int)
            if v not in also and ((ge is not None and v < ge) or (lt is not None and v >= lt)):
                raise _bad(path, f"{v} is out of range")
        case Float(gt=gt, ge=ge, le=le):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _bad(path, f"expected a number, got {type(v).__name__}")
            # written so that NaN fails every bound
            if (
                (gt is not None and not v > gt)
                or (ge is not None and not v >= ge)
                or (le is not None and not v <= le)
            ):
                raise _bad(path, f"{v} is out of range")
        case Str(lo=lo, hi=hi):
            if not isinstance(v, str):
                raise _bad(path, f"expected a string, got {type(v).__name__}")
            n = len(v.encode("utf-8"))
            if n < lo or (hi is not None and n > hi):
                raise _bad(path, f"string of {n} bytes, expected {lo}..{hi if hi is not None else ''}")
        case OneOf(values=values):
            if not isinstance(v, str) or v not in values:
                raise _bad(path, f"{v!r} is not one of {', '.join(values)}")
        case Bool():
            if not isinstance(v, bool):
                raise _bad(path, f"expected a bool, got {type(v).__name__}")
        case AnyValue():
            pass
        case Map():
            if not isinstance(v, dict):
                raise _bad(path, f"expected a map, got {type(v).__name__}")
        case Nullable(inner=inner):
            if v is not None:
                _check(inner, v, path)
        case ListOf(item=item, min_len=min_len):
            if not isinstance(v, list):
                raise _bad(path, f"expected a list, got {type(v).__name__}")
            if len(v) < min_len:
                raise _bad(path, f"expected at least {min_len} items")
            for i, x in enumerate(v):
                _check(item, x, f"{path}[{i}]")
        case Ref(dtype=dtype, rank=rank):
            if not isinstance(v, np.ndarray):
                raise _bad(path, "expected an array reference")
            if dtype is not None and v.dtype != DTYPES[dtype]:
                raise _bad(path, f"expected {dtype}, got {v.dtype.name}")
            if rank is not None and v.ndim != rank:
                raise _bad(path, f"expected rank {rank}, got {v.ndim}")
        case Record():
            if not isinstance(v, dict):
                raise _bad(path, f"expected a map, got {type(v).__name__}")
            _check_record(spec, v, path)


def _check_fields(fields: Mapping[str, F], body: dict[str, Any], path: str) -> None:
    for key, f in fields.items():
        if key in body:
            _check(f.spec, body[key], f"{path}.{key}")
        elif f.required:
            raise _bad(f"{path}.{key}", "missing")


def _check_record(rec: Record, body: dict[str, Any], path: str) -> None:
    if not rec.checked:
        return
    _check_fields(rec.fields, body, path)
    if rec.when is not None:
        key, value, extra = rec.when
        if body.get(key) is value:
            _check_fields(extra, body, path)
    for c in rec.checks:
        items = body[c.items]
        total = sum(items) if c.key is None else sum(x[c.key] for x in items)
        for r in c.refs:
            if body[r].shape[0] != total:
                raise _bad(path, f"{c.items} account for {total} values, {r} holds {body[r].shape[0]}")


def decode(frames: Sequence[bytes]) -> Message:
    """Check one message against PROTOCOL.md section 7, in order, and return it decoded.

    Raises :class:`WireError` with the code of the first check that fails.
    """
    # 1. frames and the type frame
    if len(frames) < 2:
        raise WireError("bad_frame", f"{len(frames)} frame(s), a message has at least 2")
    head = bytes(frames[0])
    if not 1 <= len(head) <= MAX_TYPE_BYTES or not all(0x20 <= b <= 0x7E for b in head):
        raise WireError("bad_frame", f"type frame {head[:40]!r} is not 1..32 printable ASCII bytes")
    # 2. a known type
    name = head.decode("ascii")
    rec = SCHEMA.get(name)
    if rec is None:
        raise WireError("unknown_type", f"unknown message type {name!r}")
    # 3. one msgpack map with string keys
    try:
        body = msgpack.unpackb(bytes(frames[1]), raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # incl. ExtraData, UnicodeDecodeError
        raise WireError(
            "bad_message", f"{name} body is not one msgpack value ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(body, dict):
        raise WireError("bad_message", f"{name} body is a {type(body).__name__}, not a map")
    body = _plain(body, name)
    # 4. array references (where the schema expects one and a map stands) and the frames they use
    used: set[int] = set()
    for key, f in rec.fields.items():
        if isinstance(f.spec, Ref) and isinstance(body.get(key), dict):
            body[key] = _read_ref(body[key], f"{name}.{key}", frames, used)
    unused = sorted(set(range(2, len(frames))) - used)
    if unused:
        raise WireError("bad_frame", f"{name}: frame(s) {unused} are not referenced from the body")
    # 5. fields
    _check_record(rec, body, name)
    return Message(name, body)
