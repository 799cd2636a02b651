/**
 * The wire codec of bridge/PROTOCOL.md: [type, msgpack body, raw array frames...].
 *
 * Decoding checks the message in the protocol's order (frames, type, body, array references,
 * fields) and throws a WireError whose code is the protocol's error code, so the server can answer
 * every malformed message instead of dropping it. The schema is one declarative table (SCHEMA);
 * python/specactor/wire.py holds the same table and bridge/vectors/messages.json ties the two.
 */
import { Packr, Unpackr } from "msgpackr";

export const PROTOCOL_VERSION = 1;
const MAX_TYPE_BYTES = 32;

export class WireError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type DType = "int32" | "float32" | "float64";
export type TypedArray = Int32Array | Float32Array | Float64Array;
const ITEMSIZE: Record<DType, number> = { int32: 4, float32: 4, float64: 8 };

export type Body = Record<string, unknown>;
export interface Message {
  type: string;
  body: Body;
}

// ---- schema -------------------------------------------------------------------------------------

type Field =
  | { t: "int"; min?: number; max?: number; values?: readonly number[] }
  | { t: "float"; min?: number; max?: number; minExclusive?: boolean }
  | { t: "bool" }
  | { t: "str"; min?: number; max?: number; values?: readonly string[] }
  | { t: "list"; of: Field; minLen?: number }
  | { t: "ref"; dtype: DType; rank: number }
  | { t: "map" }
  | { t: "any" };
interface FieldSpec {
  f: Field;
  required?: boolean;
  nil?: boolean;
}
interface TypeSpec {
  fields: Record<string, FieldSpec>;
  check?: (body: Body) => string | undefined;
  /** Worker types (until the worker issue): any top-level map with a `frame` key is a reference. */
  open?: boolean;
}

/** Decoded arrays are flat; their declared rank is kept here for the schema check. */
const RANKS = new WeakMap<TypedArray, number>();

const SEED_MAX = 2 ** 53 - 1;
const req = (f: Field): FieldSpec => ({ f, required: true });
const opt = (f: Field, nil = false): FieldSpec => ({ f, nil });
const int = (min?: number, max?: number): Field => ({ t: "int", min, max });
const str = (min = 0, max = Infinity): Field => ({ t: "str", min, max });
const reqId = str(1, 128);
const versionReply: TypeSpec = { fields: { weight_version: req(int(0)) } };
const none: TypeSpec = { fields: {} };
const worker: TypeSpec = { fields: {}, open: true };

const ENTRY: Record<string, FieldSpec> = {
  id: req(reqId),
  prompt: req(int(0)),
  sample: req(int(0)),
  num_tokens: req(int(0)),
  finished: req({ t: "bool" }),
};
const FINAL_ENTRY: Record<string, FieldSpec> = {
  finish_reason: req({ t: "str", values: ["stop", "length", "abort"] }),
  seed: req(int(0)),
  weight_version: req(int(0)),
  engine_steps: req(int(0)),
  accepted_draft_tokens: req(int(0)),
  draft_tokens: opt(int(0)),
};

export const SCHEMA: Record<string, TypeSpec> = {
  // client -> server
  hello: { fields: { protocol: req(int(1)), client: opt(str(0, 256)) } },
  generate: {
    fields: {
      id: req(reqId),
      prompt_ids: req({ t: "ref", dtype: "int32", rank: 1 }),
      prompt_lengths: req({ t: "list", of: int(1), minLen: 1 }),
      n: opt(int(1)),
      max_tokens: req(int(1)),
      temperature: opt({ t: "float", min: 0 }),
      top_p: opt({ t: "float", min: 0, minExclusive: true, max: 1 }),
      top_k: opt({ t: "int", min: -1 }),
      seed: opt(int(0, SEED_MAX), true),
      history_key: opt(str(1, 256), true),
      stream: opt({ t: "bool" }),
      stop_token_ids: opt({ t: "list", of: int(0) }, true),
      seeds: opt({ t: "list", of: int(0, SEED_MAX) }, true),
    },
    check: (b) => {
      const total = (b.prompt_lengths as number[]).reduce((a, x) => a + x, 0);
      const len = (b.prompt_ids as TypedArray).length;
      return total === len ? undefined : `prompt_lengths sum to ${total} but prompt_ids holds ${len} tokens`;
    },
  },
  abort: { fields: { ids: req({ t: "list", of: reqId }) } },
  health: none,
  stats: none,
  resume: none,
  bye: none,
  ping: { fields: { t: opt({ t: "any" }, true) } },
  pong: { fields: { t: opt({ t: "any" }, true) } },
  pause: { fields: { mode: opt({ t: "str", values: ["drain", "abort"] }) } },
  bump: { fields: { version: opt(int(0), true) } },
  shutdown: { fields: { drain: opt({ t: "bool" }) } },
  // also server -> engine worker (section 5), answered with the same replies
  release_memory: none,
  restore_memory: none,
  clear_kv: none,
  // server -> client
  welcome: {
    fields: {
      protocol: req(int(1)),
      server: req(str()),
      model: req({ t: "map" }),
      heartbeat_interval_s: req({ t: "float", min: 0, minExclusive: true }),
      client_timeout_s: req({ t: "float", min: 0, minExclusive: true }),
      max_message_bytes: req(int(1)),
      weight_version: req(int(0)),
    },
  },
  accepted: { fields: { id: req(reqId), seed: req(int(0, SEED_MAX)), samples: req(int(1)) } },
  outputs: {
    fields: {
      outputs: req({ t: "list", of: { t: "map" } }),
      token_ids: req({ t: "ref", dtype: "int32", rank: 1 }),
      log_probs: req({ t: "ref", dtype: "float32", rank: 1 }),
    },
    check: (b) => {
      let total = 0;
      for (const e of b.outputs as Body[]) {
        const problem = checkFields(e, ENTRY) ?? (e.finished ? checkFields(e, FINAL_ENTRY) : undefined);
        if (problem) return `outputs entry: ${problem}`;
        total += e.num_tokens as number;
      }
      const t = (b.token_ids as TypedArray).length;
      const l = (b.log_probs as TypedArray).length;
      return total === t && t === l ? undefined : `entries hold ${total} tokens but token_ids has ${t} and log_probs ${l}`;
    },
  },
  aborted: { fields: { ids: req({ t: "list", of: str() }), unknown: req({ t: "list", of: str() }) } },
  paused: versionReply,
  bumped: versionReply,
  resumed: versionReply,
  memory_released: { fields: { kv_bytes: req(int(0)) } },
  memory_restored: { fields: { kv_bytes: req(int(0)) } },
  kv_cleared: { fields: { sequences: req(int(0)) } },
  error: { fields: { code: req(str(1, 64)), message: req(str()), id: opt(str(), true), type: opt(str(), true) } },
  // server <-> engine worker (section 5): frames and references only, until the worker issue
  register: worker,
  registered: worker,
  step: worker,
  step_result: worker,
  draft: worker,
  draft_result: worker,
  truncate: worker,
  release: worker,
  set_version: worker,
  heartbeat: worker,
};

function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

function checkValue(v: unknown, f: Field, name: string): string | undefined {
  switch (f.t) {
    case "int":
      if (typeof v !== "number" || !Number.isInteger(v)) return `${name} must be an integer, got ${describe(v)}`;
      if ((f.min !== undefined && v < f.min) || (f.max !== undefined && v > f.max)) return `${name} must be in [${f.min ?? "-inf"}, ${f.max ?? "inf"}], got ${v}`;
      return undefined;
    case "float":
      if (typeof v !== "number" || !Number.isFinite(v)) return `${name} must be a number, got ${describe(v)}`;
      if (f.min !== undefined && (f.minExclusive ? v <= f.min : v < f.min)) return `${name} must be ${f.minExclusive ? ">" : ">="} ${f.min}, got ${v}`;
      if (f.max !== undefined && v > f.max) return `${name} must be <= ${f.max}, got ${v}`;
      return undefined;
    case "bool":
      return typeof v === "boolean" ? undefined : `${name} must be a boolean, got ${describe(v)}`;
    case "str": {
      if (typeof v !== "string") return `${name} must be a string, got ${describe(v)}`;
      if (f.values && !f.values.includes(v)) return `${name} must be one of ${f.values.join(", ")}, got '${v}'`;
      const n = utf8Length(v);
      if ((f.min !== undefined && n < f.min) || (f.max !== undefined && n > f.max)) return `${name} must be ${f.min}..${f.max} bytes, got ${n}`;
      return undefined;
    }
    case "list": {
      if (!Array.isArray(v)) return `${name} must be a list, got ${describe(v)}`;
      if (f.minLen !== undefined && v.length < f.minLen) return `${name} needs at least ${f.minLen} entries`;
      for (let i = 0; i < v.length; i++) {
        const p = checkValue(v[i], f.of, `${name}[${i}]`);
        if (p) return p;
      }
      return undefined;
    }
    case "ref": {
      const ok = f.dtype === "int32" ? v instanceof Int32Array : f.dtype === "float32" ? v instanceof Float32Array : v instanceof Float64Array;
      if (!ok) return `${name} must be an array reference of ${f.dtype}`;
      const rank = RANKS.get(v as TypedArray) ?? 1;
      return rank === f.rank ? undefined : `${name} must have rank ${f.rank}, got ${rank}`;
    }
    case "map":
      return isPlainObject(v) ? undefined : `${name} must be a map, got ${describe(v)}`;
    case "any":
      return undefined;
  }
}

function checkFields(body: Body, fields: Record<string, FieldSpec>): string | undefined {
  for (const [name, spec] of Object.entries(fields)) {
    const v = body[name];
    if (v === undefined) {
      if (spec.required) return `${name} is required`;
      continue;
    }
    if (v === null) {
      if (spec.nil) continue;
      return `${name} must not be nil`;
    }
    const p = checkValue(v, spec.f, name);
    if (p) return p;
  }
  return undefined;
}

function describe(v: unknown): string {
  if (v === null) return "nil";
  if (Array.isArray(v)) return "a list";
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return "binary";
  if (typeof v === "string") return `'${v.length > 40 ? v.slice(0, 40) + "..." : v}'`;
  if (typeof v === "object") return "a map";
  return `${typeof v} ${String(v)}`;
}

function isPlainObject(v: unknown): v is Body {
  return typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

// ---- decoding -----------------------------------------------------------------------------------

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: "number" });
const packr = new Packr({ useRecords: false, int64AsType: "number" });

const REPLACEMENT_UTF8 = Buffer.from("\uFFFD", "utf8");

/**
 * msgpackr decodes invalid UTF-8 to U+FFFD instead of failing. A decoded U+FFFD that the raw body
 * does not contain (as the bytes EF BF BD) therefore came from invalid UTF-8.
 */
function checkUtf8(v: unknown, raw: Buffer): void {
  if (typeof v === "string") {
    if (v.includes("\uFFFD") && !raw.includes(REPLACEMENT_UTF8)) throw new WireError("bad_message", "a string is not valid UTF-8");
  } else if (Array.isArray(v)) for (const x of v) checkUtf8(x, raw);
  else if (v instanceof Map) for (const [k, x] of v) (checkUtf8(k, raw), checkUtf8(x, raw));
}

/** Converts msgpackr's Maps to objects; throws on a non-string key. */
function toObjects(v: unknown): unknown {
  if (v instanceof Map) {
    const o: Body = {};
    for (const [k, x] of v) {
      if (typeof k !== "string") throw new WireError("bad_message", `map key ${describe(k)} is not a string`);
      o[k] = toObjects(x);
    }
    return o;
  }
  if (Array.isArray(v)) return v.map(toObjects);
  if (typeof v === "object" && v !== null && !(v instanceof Uint8Array)) {
    // msgpackr's reserved-byte marker, timestamps and other extension values: not protocol data
    throw new WireError("bad_message", `unsupported msgpack value (${v.constructor?.name ?? "object"})`);
  }
  return v;
}

function resolveRef(ref: unknown, name: string, frames: Buffer[], used: Set<number>): TypedArray {
  if (!isPlainObject(ref)) throw new WireError("bad_message", `${name} must be an array reference, got ${describe(ref)}`);
  const { frame, dtype, shape } = ref;
  if (typeof frame !== "number" || !Number.isInteger(frame) || frame < 2 || frame >= frames.length) {
    throw new WireError("bad_frame", `${name}: frame ${describe(frame)} is not an array frame of this ${frames.length}-frame message`);
  }
  if (used.has(frame)) throw new WireError("bad_frame", `${name}: frame ${frame} is referenced twice`);
  if (typeof dtype !== "string" || !(dtype in ITEMSIZE)) throw new WireError("bad_frame", `${name}: unknown dtype ${describe(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 0)) {
    throw new WireError("bad_frame", `${name}: shape must be a list of integers >= 0`);
  }
  const count = shape.reduce((a: number, d: number) => a * d, 1);
  const buf = frames[frame];
  const size = ITEMSIZE[dtype as DType];
  if (buf.length !== count * size) throw new WireError("bad_frame", `${name}: frame ${frame} has ${buf.length} bytes, shape ${JSON.stringify(shape)} of ${dtype} needs ${count * size}`);
  used.add(frame);
  // a view of the frame where its bytes are aligned for one, else a copy
  const aligned = buf.byteOffset % size === 0;
  const bytes = aligned ? buf.buffer : new Uint8Array(buf).buffer;
  const offset = aligned ? buf.byteOffset : 0;
  const a =
    dtype === "int32" ? new Int32Array(bytes, offset, count) : dtype === "float32" ? new Float32Array(bytes, offset, count) : new Float64Array(bytes, offset, count);
  RANKS.set(a, shape.length);
  return a;
}

/** Decodes and checks one message (frames without the ROUTER's routing id). */
export function decode(frames: Buffer[]): Message {
  if (frames.length < 2) throw new WireError("bad_frame", `a message needs a type frame and a body frame, got ${frames.length} frame(s)`);
  const tf = frames[0];
  if (tf.length < 1 || tf.length > MAX_TYPE_BYTES || !tf.every((c) => c >= 0x20 && c < 0x7f)) {
    throw new WireError("bad_frame", `the type frame must be 1..${MAX_TYPE_BYTES} printable ASCII bytes`);
  }
  const type = tf.toString("latin1");
  const spec = SCHEMA[type];
  if (!spec) throw new WireError("unknown_type", `unknown message type '${type}'`);
  let values: unknown[];
  try {
    values = unpackr.unpackMultiple(frames[1]) as unknown[];
  } catch (e) {
    throw new WireError("bad_message", `body is not msgpack: ${(e as Error).message}`);
  }
  if (values.length !== 1) throw new WireError("bad_message", `body must be one msgpack value, got ${values.length}`);
  let body: unknown;
  try {
    checkUtf8(values[0], frames[1]);
    body = toObjects(values[0]);
  } catch (e) {
    if (e instanceof WireError) throw e;
    throw new WireError("bad_message", `body: ${(e as Error).message}`);
  }
  if (!isPlainObject(body)) throw new WireError("bad_message", `body must be a map, got ${describe(body)}`);
  const used = new Set<number>();
  for (const [name, fs] of Object.entries(spec.fields)) {
    if (fs.f.t === "ref" && body[name] !== undefined && body[name] !== null) body[name] = resolveRef(body[name], name, frames, used);
  }
  if (spec.open) {
    for (const [name, v] of Object.entries(body)) if (isPlainObject(v) && "frame" in v) body[name] = resolveRef(v, name, frames, used);
  }
  if (used.size !== frames.length - 2) throw new WireError("bad_frame", `${frames.length - 2 - used.size} array frame(s) are not referenced by the body`);
  const problem = checkFields(body, spec.fields) ?? spec.check?.(body);
  if (problem) throw new WireError("bad_message", `${type}: ${problem}`);
  return { type, body };
}

// ---- encoding -----------------------------------------------------------------------------------

/** Encodes a message; each entry of `arrays` becomes an array reference under its key. */
export function encode(type: string, body: Body, arrays: Record<string, TypedArray> = {}): Buffer[] {
  const extra: Buffer[] = [];
  const full: Body = { ...body };
  for (const [key, a] of Object.entries(arrays)) {
    const dtype: DType = a instanceof Int32Array ? "int32" : a instanceof Float32Array ? "float32" : "float64";
    full[key] = { frame: 2 + extra.length, dtype, shape: [a.length] };
    extra.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  }
  return [Buffer.from(type, "latin1"), packr.pack(full), ...extra];
}
