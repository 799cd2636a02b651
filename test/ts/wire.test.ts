/** The TypeScript codec against the cross-language message vectors (bridge/vectors/messages.json). */
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { projectRoot } from "../../src/paths";
import { SCHEMA, WireError, decode, encode } from "../../src/bridge/wire";

interface Vector {
  name: string;
  direction: string;
  frames: string[];
  valid: boolean;
  type: string | null;
  body: unknown;
  error: string | null;
}

const file = JSON.parse(fs.readFileSync(path.join(projectRoot(), "bridge", "vectors", "messages.json"), "utf8")) as { protocol: number; messages: Vector[] };

/** The decoded body in the vectors' JSON form: arrays as {dtype, shape, data}. */
function jsonForm(v: unknown): unknown {
  if (v instanceof Int32Array || v instanceof Float32Array || v instanceof Float64Array) {
    const dtype = v instanceof Int32Array ? "int32" : v instanceof Float32Array ? "float32" : "float64";
    return { dtype, shape: [v.length], data: Array.from(v) };
  }
  if (Array.isArray(v)) return v.map(jsonForm);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonForm(x)]));
  return v;
}

test("message vectors cover every protocol type and every decode error code", () => {
  assert.equal(file.protocol, 1);
  const types = new Set(file.messages.filter((m) => m.valid).map((m) => m.type));
  for (const t of ["hello", "generate", "abort", "health", "stats", "ping", "pause", "bump", "resume", "shutdown", "release_memory", "restore_memory", "clear_kv", "welcome", "accepted", "outputs", "aborted", "pong", "paused", "bumped", "resumed", "memory_released", "memory_restored", "kv_cleared", "bye", "error"]) {
    assert.ok(types.has(t), `no valid vector of type ${t}`);
    assert.ok(SCHEMA[t], `schema lacks ${t}`);
  }
  const codes = new Set(file.messages.map((m) => m.error));
  for (const c of ["bad_frame", "unknown_type", "bad_message"]) assert.ok(codes.has(c), c);
});

for (const v of file.messages) {
  test(`vector ${v.name}`, () => {
    const frames = v.frames.map((f) => Buffer.from(f, "base64"));
    if (v.valid) {
      const m = decode(frames);
      assert.equal(m.type, v.type);
      assert.deepEqual(jsonForm(m.body), v.body);
    } else {
      assert.throws(
        () => decode(frames),
        (e: unknown) => e instanceof WireError && e.code === v.error,
        `expected ${v.error}`,
      );
    }
  });
}

test("encode then decode round-trips a generate and an outputs message", () => {
  const ids = Int32Array.from([5, 6, 7, 8]);
  const g = decode(encode("generate", { id: "r1", prompt_lengths: [1, 3], max_tokens: 4, seed: 2 ** 53 - 1, temperature: 0.7 }, { prompt_ids: ids }));
  assert.deepEqual(Array.from(g.body.prompt_ids as Int32Array), [5, 6, 7, 8]);
  assert.equal(g.body.seed, 2 ** 53 - 1);
  const o = decode(
    encode(
      "outputs",
      { outputs: [{ id: "r1", prompt: 0, sample: 0, num_tokens: 2, finished: true, finish_reason: "stop", seed: 1, weight_version: 0, engine_steps: 2, accepted_draft_tokens: 0 }] },
      { token_ids: Int32Array.from([1, 2]), log_probs: Float32Array.from([-0.5, -1.25]) },
    ),
  );
  assert.deepEqual(Array.from(o.body.log_probs as Float32Array), [-0.5, -1.25]);
});
