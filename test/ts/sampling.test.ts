import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { MAX_SEED, bits53, keyParity, threefry2x32, uniform } from "../../src/sampling/threefry";
import { VocabKernel } from "../../src/sampling/kernel";
import { deriveSeed, freshSeed } from "../../src/sampling/seeds";
import { Sampler, validateParams } from "../../src/sampling/sampler";
import { vectors } from "./helpers";

const V = vectors();

test("threefry2x32_20 matches Random123's known answers and the shared vectors", () => {
  const out = new Uint32Array(2);
  assert.ok(V.threefry2x32_20.length >= 3);
  for (const c of V.threefry2x32_20) {
    threefry2x32(c.counter[0], c.counter[1], c.key[0], c.key[1], out);
    assert.deepEqual([out[0], out[1]], c.out);
  }
});

test("the vocabulary kernel's Threefry screen keeps exactly the tokens the scalar rule keeps", () => {
  const n = 1003; // not a multiple of the kernel's 8 lanes: the padded tail must not leak
  const k = new VocabKernel(1024);
  const [k0, k1] = [0x13198a2e, 0x83707344];
  for (let i = 0; i < 1024; i++) {
    k.keep[i] = (i * 2654435761) >>> 0;
    k.pv[i] = Math.exp(-((i * 7919) % 97) / 9);
  }
  for (const bound of [0.05, 1, 30]) {
    const m = k.screen(n, 2 ** 31 + 77, k0, k1, keyParity(k0, k1), bound);
    const want: number[] = [];
    for (let i = 0; i < n; i++) {
      const u = (bits53(2 ** 31 + 77, k.keep[i], k0, k1) + 0.5) / MAX_SEED;
      if (!(1 - u > bound * k.pv[i])) want.push(i);
    }
    assert.ok(want.length > 0 && want.length < n, `bound ${bound} screens something and keeps something`);
    assert.deepEqual(Array.from(k.cand.subarray(0, m)), want);
    want.forEach((i, j) => assert.equal(k.candU[j], (bits53(2 ** 31 + 77, k.keep[i], k0, k1) + 0.5) / MAX_SEED));
  }
});

test("the vocabulary kernel's scaling, max and exp agree with Math.exp to a few ulp", () => {
  const n = 4097;
  const k = new VocabKernel(n);
  for (let i = 0; i < n; i++) k.logits[i] = Math.fround(Math.sin(i * 12.9898) * 43.758 - 5);
  k.logits[100] = NaN; // ignored by the max, as by a comparison loop
  for (const t of [1, 0.7, 0.013]) {
    const max = k.scaleMax(t);
    let want = -Infinity;
    for (let i = 0; i < n; i++) {
      if (i !== 100) assert.equal(k.z[i], k.logits[i] / t);
      if (k.logits[i] / t > want) want = k.logits[i] / t;
    }
    assert.equal(max, want);
    k.z[100] = max - 1;
    const sum = k.expAll(max);
    let ref = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(k.z[i] - max);
      ref += e;
      assert.equal(k.keep[i], i);
      if (k.z[i] - max < -708) assert.equal(k.pv[i], 0);
      else assert.ok(Math.abs(k.pv[i] - e) <= 4 * Number.EPSILON * e, `exp(${k.z[i] - max}): ${k.pv[i]} vs ${e}`);
    }
    assert.ok(Math.abs(sum - ref) <= 1e-13 * ref);
  }
});

test("the committed kernel bytes are built from scripts/sampler-kernel.js", () => {
  const script = path.join(__dirname, "..", "..", "..", "scripts", "sampler-kernel.js");
  const r = spawnSync(process.execPath, [script, "--check"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});

test("53-bit uniforms and derived seeds are bit-identical to Python's", () => {
  for (const u of V.uniforms) assert.equal(uniform(u.seed, u.position, u.token), u.u);
  for (const d of V.derive_seed) assert.equal(deriveSeed(d.seed, d.a, d.b), d.derived);
});

test("seeds outside [0, 2^53) are rejected; fresh seeds are in range and differ", () => {
  assert.throws(() => uniform(-1, 0, 0), /seed/);
  assert.throws(() => uniform(2 ** 53, 0, 0), /seed/);
  assert.throws(() => uniform(1.5, 0, 0), /seed/);
  const a = freshSeed();
  const b = freshSeed();
  assert.ok(Number.isSafeInteger(a) && a >= 0);
  assert.notEqual(a, b);
});

test("processed distribution, sample and log-prob match the shared vectors", () => {
  assert.ok(V.samples.length >= 10);
  for (const [i, c] of V.samples.entries()) {
    const logits = Float32Array.from(c.logits);
    const s = new Sampler(logits.length);
    const params = validateParams({ temperature: c.params.temperature, topP: c.params.top_p, topK: c.params.top_k });
    const lp = s.processedLogprobs(logits, params);
    c.processed_logprobs.forEach((want: number | null, v: number) => {
      if (want === null) assert.equal(lp[v], -Infinity, `case ${i} token ${v} should be removed`);
      else assert.ok(Math.abs(lp[v] - want) < 1e-12, `case ${i} token ${v}: ${lp[v]} vs ${want}`);
    });
    const got = s.sample(logits, params, c.seed, c.position);
    assert.equal(got.token, c.token, `case ${i} token`);
    assert.ok(Math.abs(got.logprob - c.logprob) < 1e-12, `case ${i} logprob ${got.logprob} vs ${c.logprob}`);
  }
});

test("ties at the k-th value are kept by top-k", () => {
  const s = new Sampler(6);
  const lp = s.processedLogprobs(Float32Array.from([1, 3, 3, 2, 3, 0]), { temperature: 1, topP: 1, topK: 2 });
  assert.deepEqual([...lp].map((x) => x > -Infinity), [false, true, true, false, true, false]);
});

test("top-p keeps the smallest descending prefix whose earlier mass is below P", () => {
  const s = new Sampler(4);
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  const kept = (p: number) => [...s.processedLogprobs(logits, { temperature: 1, topP: p, topK: -1 })].map((x) => x > -Infinity);
  assert.deepEqual(kept(0.5), [true, false, false, false]);
  assert.deepEqual(kept(0.51), [true, true, false, false]);
  assert.deepEqual(kept(0.9), [true, true, true, false]);
  assert.deepEqual(kept(0.96), [true, true, true, true]);
});

test("bad sampling parameters give errors that name them", () => {
  assert.throws(() => validateParams({ temperature: NaN, topP: 1, topK: -1 }), /temperature/);
  assert.throws(() => validateParams({ temperature: -0.5, topP: 1, topK: -1 }), /temperature/);
  assert.throws(() => validateParams({ temperature: 1, topP: 0, topK: -1 }), /top-p/);
  assert.throws(() => validateParams({ temperature: 1, topP: 1.5, topK: -1 }), /top-p/);
  assert.throws(() => validateParams({ temperature: 1, topP: 1, topK: -3 }), /top-k/);
  assert.throws(() => validateParams({ temperature: 1, topP: 1, topK: 2.5 }), /top-k/);
});

test("the same (seed, position) gives the same token; the position changes the noise", () => {
  const s = new Sampler(1000);
  const logits = new Float32Array(1000); // uniform: the noise alone decides
  const a = s.sample(logits, { temperature: 1, topP: 1, topK: -1 }, 5, 10).token;
  assert.equal(s.sample(logits, { temperature: 1, topP: 1, topK: -1 }, 5, 10).token, a);
  const others = new Set(Array.from({ length: 20 }, (_, t) => s.sample(logits, { temperature: 1, topP: 1, topK: -1 }, 5, 11 + t).token));
  assert.ok(others.size > 10);
});

test("top-k 0 is off, exactly as -1 (vLLM's convention); the shared vectors hold a top-k 0 case", () => {
  assert.ok(V.samples.some((c: { params: { top_k: number } }) => c.params.top_k === 0), "no top_k 0 vector");
  assert.equal(validateParams({ temperature: 1, topP: 1, topK: 0 }).topK, 0);
  const V_ = 500;
  const s = new Sampler(V_);
  const logits = Float32Array.from({ length: V_ }, (_, i) => Math.sin(i * 1.7) * 3);
  for (const [t, p] of [[1, 1], [0.7, 0.9], [0, 1]] as const) {
    const off = { temperature: t, topP: p, topK: -1 };
    const zero = { temperature: t, topP: p, topK: 0 };
    assert.deepEqual(s.processedLogprobs(logits, zero), s.processedLogprobs(logits, off));
    for (let pos = 0; pos < 50; pos++) assert.deepEqual(s.sample(logits, zero, 11, pos), s.sample(logits, off, 11, pos));
  }
  // and 0 is not "keep nothing" nor top-1: a flat distribution keeps every token
  const flat = s.processedLogprobs(new Float32Array(V_), { temperature: 1, topP: 1, topK: 0 });
  assert.ok([...flat].every((x) => Math.abs(x + Math.log(V_)) < 1e-12));
});
