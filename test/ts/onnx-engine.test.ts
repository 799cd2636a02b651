import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { OnnxEngine } from "../../src/engine/onnx-engine";
import type { SeqStep } from "../../src/engine/engine";
import type { SamplingParams } from "../../src/sampling/sampler";
import { tinyDir } from "./helpers";

let engine: OnnxEngine;
let nextId = 1000;
before(async () => {
  engine = await OnnxEngine.load(tinyDir());
});
after(async () => engine.close());

const T1: SamplingParams = { temperature: 1, topP: 1, topK: -1 };

/** Plain decoding, one token per step: the reference every trie step must reproduce. */
async function plain(prompt: number[], seed: number, n: number, params = T1): Promise<{ tokens: number[]; logprobs: number[] }> {
  const id = nextId++;
  const tokens: number[] = [];
  const logprobs: number[] = [];
  let append = prompt;
  while (tokens.length < n) {
    const [r] = await engine.step([{ seqId: id, append, params, seed, maxEmit: n - tokens.length }]);
    tokens.push(...r.tokens);
    logprobs.push(...r.logprobs);
    append = [r.tokens[r.tokens.length - 1]];
    if (engine.info.eosIds.includes(append[0])) break;
  }
  engine.release(id);
  return { tokens, logprobs };
}

const PROMPT = [1, 17, 42, 99, 7, 300, 12];

test("a trie holding plain's future is accepted whole in one step, with plain's tokens", async () => {
  for (const [seed, params] of [[3, T1], [4, { temperature: 0.7, topP: 0.95, topK: 40 }], [5, { temperature: 0, topP: 1, topK: -1 }]] as const) {
    const ref = await plain(PROMPT, seed, 12, params);
    const eos = ref.tokens.findIndex((t) => engine.info.eosIds.includes(t));
    assert.equal(eos, -1, "pick a seed whose first 12 tokens contain no EOS");
    const id = nextId++;
    // chain of plain's next 6 tokens, plus wrong siblings at every level
    const tokens: number[] = [];
    const parents: number[] = [];
    let parent = -1;
    for (let d = 0; d < 6; d++) {
      tokens.push((ref.tokens[d] + 1) % engine.info.vocabSize); // a wrong branch
      parents.push(parent);
      tokens.push(ref.tokens[d]);
      parents.push(parent);
      parent = tokens.length - 1;
    }
    const [r] = await engine.step([{ seqId: id, append: PROMPT, trie: { tokens, parents }, params, seed, maxEmit: 12 }]);
    assert.deepEqual(r.tokens, ref.tokens.slice(0, 7));
    assert.equal(r.accepted, 6);
    r.logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - ref.logprobs[i]) < 1e-4));
    assert.equal(engine.cachedLength(id), PROMPT.length + 6);
    // the KV of the accepted path is right: decoding on continues plain's sequence
    const [r2] = await engine.step([{ seqId: id, append: [r.tokens[6]], params, seed, maxEmit: 5 }]);
    assert.deepEqual(r2.tokens, [ref.tokens[7]]);
    engine.release(id);
  }
});

test("a wrong draft costs nothing: the correction is plain's token", async () => {
  const ref = await plain(PROMPT, 11, 3);
  const id = nextId++;
  const wrong = (ref.tokens[1] + 5) % engine.info.vocabSize;
  const [r] = await engine.step([{ seqId: id, append: PROMPT, trie: { tokens: [ref.tokens[0], wrong, 3], parents: [-1, 0, 1] }, params: T1, seed: 11, maxEmit: 10 }]);
  assert.deepEqual(r.tokens, ref.tokens.slice(0, 2));
  assert.equal(r.accepted, 1);
  engine.release(id);
});

test("the trie is clipped by maxEmit", async () => {
  const ref = await plain(PROMPT, 3, 6);
  const id = nextId++;
  const [r] = await engine.step([{ seqId: id, append: PROMPT, trie: { tokens: ref.tokens.slice(0, 5), parents: [-1, 0, 1, 2, 3] }, params: T1, seed: 3, maxEmit: 3 }]);
  assert.deepEqual(r.tokens, ref.tokens.slice(0, 3));
  engine.release(id);
});

test("ragged batches give each sequence the tokens it gets alone", async () => {
  const prompts = [[1, 2, 3], [1, 50, 60, 70, 80, 90, 100, 110], [9], [1, 400, 401, 402, 403]];
  const alone: { tokens: number[] }[] = [];
  for (const [i, p] of prompts.entries()) alone.push(await plain(p, 100 + i, 16));
  const ids = prompts.map(() => nextId++);
  const outs: number[][] = prompts.map(() => []);
  let appends = prompts;
  for (let s = 0; s < 16; s++) {
    const steps: SeqStep[] = prompts.map((_, i) => ({ seqId: ids[i], append: appends[i], params: T1, seed: 100 + i, maxEmit: 1 }));
    const rs = await engine.step(steps);
    rs.forEach((r, i) => outs[i].push(...r.tokens));
    appends = rs.map((r) => r.tokens);
  }
  // (a sequence that hit EOS alone keeps sampling here; compare up to its EOS)
  outs.forEach((o, i) => assert.deepEqual(o.slice(0, alone[i].tokens.length), alone[i].tokens));
  ids.forEach((id) => engine.release(id));
});

test("truncate rolls a sequence back so it can be decoded again", async () => {
  const ref = await plain(PROMPT, 21, 6);
  const id = nextId++;
  let append = PROMPT;
  for (let s = 0; s < 4; s++) append = (await engine.step([{ seqId: id, append, params: T1, seed: 21, maxEmit: 1 }]))[0].tokens;
  engine.truncate(id, PROMPT.length + 1); // keep the prompt and the first generated token
  const [r] = await engine.step([{ seqId: id, append: [ref.tokens[1]], params: T1, seed: 21, maxEmit: 1 }]);
  assert.deepEqual(r.tokens, [ref.tokens[2]]);
  assert.throws(() => engine.truncate(id, 1000), /cannot truncate/);
  assert.throws(() => engine.truncate(123456, 0), /unknown sequence/);
  engine.release(id);
});

test("bad steps are rejected with a clear error and the engine keeps working", async () => {
  const V = engine.info.vocabSize;
  await assert.rejects(engine.step([{ seqId: nextId++, append: [1, V], params: T1, seed: 1, maxEmit: 1 }]), /outside the vocabulary/);
  await assert.rejects(engine.step([{ seqId: nextId++, append: [], params: T1, seed: 1, maxEmit: 1 }]), /at least one token/);
  const long = Array.from({ length: engine.info.maxContext + 1 }, () => 5);
  await assert.rejects(engine.step([{ seqId: nextId++, append: long, params: T1, seed: 1, maxEmit: 1 }]), /context/);
  await assert.rejects(engine.step([{ seqId: nextId++, append: [1], trie: { tokens: [1], parents: [3] }, params: T1, seed: 1, maxEmit: 2 }]), /parent/);
  const ok = await plain(PROMPT, 3, 2);
  assert.equal(ok.tokens.length, 2);
});

test("steps over any subset of live sequences, releases and context growth keep every sequence exact", async () => {
  const prompts = [[1, 2, 3], [1, 50, 60, 70], [9, 9], [1, 400, 401, 402, 403, 404], [7]];
  const n = 150; // crosses the 128-position context granule
  const alone: number[][] = [];
  for (const [i, p] of prompts.entries()) alone.push((await plain(p, 300 + i, n)).tokens);
  const ids = prompts.map(() => nextId++);
  const outs: number[][] = prompts.map(() => []);
  const appends = prompts.map((p) => p);
  const live = new Set(prompts.keys());
  for (let s = 0; live.size > 0; s++) {
    // alternate between even and odd entries (non-contiguous slots), and all of them
    const group = [...live].filter((i) => s % 3 === 2 || i % 2 === s % 3);
    if (group.length === 0) continue;
    const rs = await engine.step(group.map((i) => ({ seqId: ids[i], append: appends[i], params: T1, seed: 300 + i, maxEmit: 1 })));
    rs.forEach((r, g) => {
      const i = group[g];
      outs[i].push(...r.tokens);
      appends[i] = r.tokens;
      // release at different times, so the last slot moves into the freed one
      if (outs[i].length >= alone[i].length || outs[i].length >= n - 40 * i) {
        engine.release(ids[i]);
        live.delete(i);
      }
    });
  }
  outs.forEach((o, i) => assert.deepEqual(o, alone[i].slice(0, o.length), `sequence ${i}`));
  assert.ok(outs[0].length > 128);
});
