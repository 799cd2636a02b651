import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { OnnxEngine } from "../../src/engine/onnx-engine";
import { RolloutCore, type RolloutRequest, type SpecConfig } from "../../src/rollout/core";
import type { DraftRequest, Drafter } from "../../src/drafters/drafter";
import type { Trie } from "../../src/engine/trie";
import type { Engine, SeqStep } from "../../src/engine/engine";
import { NgramDrafter } from "../../src/drafters/ngram";
import { SuffixDrafter } from "../../src/drafters/suffix";
import { CoupledModelDrafter } from "../../src/drafters/model-coupled";
import { DecoupledModelDrafter } from "../../src/drafters/model-decoupled";
import type { SamplingParams } from "../../src/sampling/sampler";
import { deriveSeed } from "../../src/sampling/seeds";
import { makeDrafter } from "../../src/drafters/registry";
import { ThreadedEngine } from "../../src/engine/threaded-engine";
import { TINY_PROMPTS, tinyDir } from "./helpers";

let engine: OnnxEngine;
before(async () => {
  engine = await OnnxEngine.load(tinyDir());
});
after(async () => engine.close());

const PROMPTS = TINY_PROMPTS;
const PARAMS: [string, SamplingParams][] = [
  ["t0", { temperature: 0, topP: 1, topK: -1 }],
  ["t0.7-topk-topp", { temperature: 0.7, topP: 0.9, topK: 40 }],
  ["t1", { temperature: 1, topP: 1, topK: -1 }],
];

function requests(params: SamplingParams, maxTokens = 40, n = 3): RolloutRequest[] {
  return PROMPTS.flatMap((p, j) => Array.from({ length: n }, (_, i) => ({ promptIds: p, params, seed: deriveSeed(9, j, i), maxTokens })));
}

async function rollout(reqs: RolloutRequest[], spec?: SpecConfig, maxBatch = 5) {
  const core = new RolloutCore(engine, maxBatch, spec);
  const results = await Promise.all(reqs.map((r) => core.submit(r)));
  return { results, stats: core.stats, drafterMetrics: core.drafterMetrics() };
}

/** Proposes plain's future tokens, with errors, extra branches and EOS branches mixed in. */
class OracleDrafter implements Drafter {
  readonly name = "oracle";
  private rng = 7;
  constructor(private readonly truth: Map<number, number[]>, private readonly errorRate: number) {}

  private rand(): number {
    this.rng = (this.rng * 1103515245 + 12345) % 2147483648;
    return this.rng / 2147483648;
  }

  async propose(reqs: DraftRequest[]): Promise<Trie[]> {
    return reqs.map((r) => {
      const future = this.truth.get(r.seed)!.slice(r.output.length, r.output.length + 100);
      const trie: Trie = { tokens: [], parents: [] };
      let parent = -1;
      for (let d = 0; d < r.maxDepth && d < future.length && trie.tokens.length < r.maxNodes; d++) {
        const wrong = this.rand() < this.errorRate;
        if (this.rand() < 0.3 && trie.tokens.length + 1 < r.maxNodes) {
          trie.tokens.push(this.rand() < 0.5 ? 2 : (future[d] + 1) % engine.info.vocabSize); // a sibling branch, sometimes EOS
          trie.parents.push(parent);
        }
        trie.tokens.push(wrong ? (future[d] + 3) % engine.info.vocabSize : future[d]);
        trie.parents.push(parent);
        parent = trie.tokens.length - 1;
      }
      return trie;
    });
  }
}

for (const [name, params] of PARAMS) {
  test(`speculation with an oracle drafter returns plain's tokens (${name})`, async () => {
    const reqs = requests(params);
    const plain = await rollout(reqs);
    const truth = new Map(reqs.map((r, i) => [r.seed, plain.results[i].tokenIds]));
    const spec = await rollout(reqs, { drafter: new OracleDrafter(truth, 0.1), draftLen: 6, maxNodes: 10 });
    spec.results.forEach((r, i) => {
      assert.deepEqual(r.tokenIds, plain.results[i].tokenIds, `request ${i}`);
      r.logprobs.forEach((lp, k) => assert.ok(Math.abs(lp - plain.results[i].logprobs[k]) < 1e-4));
      assert.equal(r.finishReason, plain.results[i].finishReason);
    });
    const ds = spec.stats.drafter!;
    assert.equal(ds.errors, 0);
    // long accepted paths are exercised: most steps accept several draft tokens
    assert.ok(ds.acceptedTokens / ds.verifySeqSteps > 2.5, `mean accepted ${ds.acceptedTokens / ds.verifySeqSteps}`);
    assert.ok(spec.stats.engineSteps < plain.stats.engineSteps / 2);
  });
}

/** Records whether a proposal carried `stop` with a child below it (a draft running past the stop). */
class RecordingDrafter implements Drafter {
  readonly name = "recording";
  pastStop = 0;
  constructor(private readonly inner: Drafter, private readonly stopOf: Map<number, number>) {}
  async propose(reqs: DraftRequest[]): Promise<Trie[]> {
    const tries = await this.inner.propose(reqs);
    tries.forEach((t, i) => {
      const stop = this.stopOf.get(reqs[i].seed);
      if (t.tokens.some((tok, k) => tok === stop && t.parents.includes(k))) this.pastStop++;
    });
    return tries;
  }
}

test("per-request stop ids: plain and speculative end at the stop id, identically, when drafts run past it", async () => {
  const params: SamplingParams = { temperature: 1, topP: 1, topK: -1 };
  const reqs = requests(params, 40, 2);
  const free = await rollout(reqs);
  const truth = new Map(reqs.map((r, i) => [r.seed, free.results[i].tokenIds]));
  // each request's stop id: a token first seen mid-output, so that plain would go on past it
  const stopOf = new Map<number, number>();
  const stopped = reqs.map((r, i) => {
    const out = free.results[i].tokenIds;
    const k = out.findIndex((t, at) => at >= 4 && at < out.length - 4 && !out.slice(0, at).includes(t) && !engine.info.eosIds.includes(t));
    assert.ok(k > 0, `request ${i} has no usable stop token`);
    stopOf.set(r.seed, out[k]);
    return { ...r, stopIds: [out[k], engine.info.vocabSize - 1] };
  });
  const plain = await rollout(stopped);
  plain.results.forEach((r, i) => {
    const out = free.results[i].tokenIds;
    const k = out.indexOf(stopOf.get(reqs[i].seed)!);
    assert.deepEqual(r.tokenIds, out.slice(0, k + 1), `request ${i} ends at its stop id`);
    assert.equal(r.finishReason, "stop");
  });
  const drafter = new RecordingDrafter(new OracleDrafter(truth, 0), stopOf);
  for (const eng of [engine, await ThreadedEngine.load(tinyDir(), { threads: 1 })]) {
    const core = new RolloutCore(eng, 5, { drafter, draftLen: 6, maxNodes: 10 });
    const spec = await Promise.all(stopped.map((r) => core.submit(r)));
    spec.forEach((r, i) => {
      assert.deepEqual(r.tokenIds, plain.results[i].tokenIds, `request ${i}`);
      assert.equal(r.finishReason, "stop");
      r.logprobs.forEach((lp, k) => assert.ok(Math.abs(lp - plain.results[i].logprobs[k]) < 1e-4));
    });
    if (eng !== engine) await eng.close();
  }
  assert.ok(drafter.pastStop > 0, "no draft ran past a stop id: the test shows nothing");
  // out of the vocabulary: refused before anything runs
  const core = new RolloutCore(engine, 5);
  assert.throws(() => core.check({ ...reqs[0], stopIds: [engine.info.vocabSize] }), /stop token id/);
});

test("budget clipping: drafts never run past max tokens, and short budgets still match", async () => {
  const reqs = requests({ temperature: 1, topP: 1, topK: -1 }, 7, 2);
  const plain = await rollout(reqs);
  const truth = new Map(reqs.map((r, i) => [r.seed, plain.results[i].tokenIds]));
  const spec = await rollout(reqs, { drafter: new OracleDrafter(truth, 0), draftLen: 16, maxNodes: 16 });
  spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
  assert.ok(spec.results.every((r) => r.tokenIds.length <= 7));
});

class BadDrafter implements Drafter {
  calls = 0;
  constructor(readonly name: string, private readonly make: (r: DraftRequest, call: number) => Trie) {}
  async propose(reqs: DraftRequest[]): Promise<Trie[]> {
    const call = this.calls++;
    if (this.name === "throws" && call % 2 === 0) throw new Error("boom");
    return reqs.map((r) => this.make(r, call));
  }
}

test("a drafter that throws or proposes bad tries is rejected with a counted error; requests continue exactly", async () => {
  const reqs = requests({ temperature: 1, topP: 1, topK: -1 }, 20, 2);
  const plain = await rollout(reqs);
  const bad: [string, BadDrafter][] = [
    ["throws", new BadDrafter("throws", () => ({ tokens: [5], parents: [-1] }))],
    ["out of vocabulary", new BadDrafter("oov", () => ({ tokens: [5, 1e9], parents: [-1, 0] }))],
    ["over budget", new BadDrafter("deep", (r) => ({ tokens: Array(r.maxDepth + 1).fill(5), parents: Array.from({ length: r.maxDepth + 1 }, (_, i) => i - 1) }))],
    ["malformed", new BadDrafter("malformed", () => ({ tokens: [5, 6], parents: [1, -1] }))],
    ["not a trie", new BadDrafter("null", () => null as unknown as Trie)],
  ];
  for (const [label, drafter] of bad) {
    const spec = await rollout(reqs, { drafter, draftLen: 4 });
    spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds, label));
    assert.ok(spec.stats.drafter!.errors > 0, `${label}: errors counted`);
    assert.ok(spec.stats.drafter!.lastError, label);
  }
});

for (const [label, make] of [
  ["ngram", () => new NgramDrafter()],
  ["suffix", () => new SuffixDrafter()],
] as const) {
  test(`the ${label} drafter is exact and gets acceptances on repetitive text`, async () => {
    for (const [, params] of PARAMS) {
      const reqs = requests(params, 60, 3);
      const plain = await rollout(reqs);
      const spec = await rollout(reqs, { drafter: make(), draftLen: 4 });
      spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
      assert.equal(spec.stats.drafter!.errors, 0);
      if (params.temperature === 0) assert.ok(spec.stats.drafter!.acceptedTokens > 0);
    }
  });
}

test("the model drafter (same seeded noise) is exact; the policy as its own drafter is accepted whole", async () => {
  const draftEngine = await OnnxEngine.load(tinyDir());
  const drafter = new CoupledModelDrafter(draftEngine, { minReach: 0, costAware: false }); // always the full draft length
  for (const [, params] of PARAMS) {
    const reqs = requests(params, 30, 2);
    const plain = await rollout(reqs);
    const spec = await rollout(reqs, { drafter, draftLen: 4 });
    spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
    const ds = spec.stats.drafter!;
    // Gumbel coupling: a drafter equal to the verifier proposes exactly the verifier's samples
    assert.ok(ds.acceptedTokens >= 0.95 * ds.proposedTokens, `${ds.acceptedTokens} of ${ds.proposedTokens}`);
  }
  await drafter.close();
});

test("the model drafter stops a chain where the verifier is unlikely to reach, and stays exact", async () => {
  // tiny's distributions are nearly flat, so a drawn token's estimated chance to win is small
  const full = new CoupledModelDrafter(await OnnxEngine.load(tinyDir()), { minReach: 0, costAware: false });
  const unsure = new CoupledModelDrafter(await OnnxEngine.load(tinyDir()), { minReach: 0.5, costAware: false });
  const params: SamplingParams = { temperature: 1, topP: 1, topK: -1 };
  const reqs = requests(params, 30, 2);
  const plain = await rollout(reqs);
  const long = await rollout(reqs, { drafter: full, draftLen: 4 });
  const short = await rollout(reqs, { drafter: unsure, draftLen: 4 });
  short.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
  const [l, s] = [long.stats.drafter!, short.stats.drafter!];
  assert.ok(s.proposedTokens < 0.5 * l.proposedTokens, `${s.proposedTokens} vs ${l.proposedTokens} proposed`);
  assert.equal(s.errors, 0);
  await full.close();
  await unsure.close();
});

/** An engine that passes everything to `inner`; the wrappers below change what they need. */
class WrappedEngine implements Engine {
  constructor(protected readonly inner: Engine) {}
  get info() {
    return this.inner.info;
  }
  step(batch: SeqStep[]) {
    return this.inner.step(batch);
  }
  cachedLength(id: number) {
    return this.inner.cachedLength(id);
  }
  truncate(id: number, length: number) {
    this.inner.truncate(id, length);
  }
  release(id: number) {
    this.inner.release(id);
  }
  sequences() {
    return this.inner.sequences();
  }
  kvBytes() {
    return this.inner.kvBytes();
  }
  settledKvBytes() {
    return this.inner.settledKvBytes();
  }
  releaseMemory() {
    return this.inner.releaseMemory();
  }
  restoreMemory() {
    return this.inner.restoreMemory();
  }
  close() {
    return this.inner.close();
  }
}

/** The tiny policy as a drafter that is sure of the wrong token: every sample shifted by one, its probability kept. */
class ShiftedEngine extends WrappedEngine {
  override async step(batch: SeqStep[]) {
    const V = this.inner.info.vocabSize;
    return (await this.inner.step(batch)).map((r) => ({ ...r, tokens: r.tokens.map((t) => (t + 1) % V), logprobs: r.logprobs.map(() => 0) }));
  }
}

test("the model drafter weighs measured acceptance against its cost: a good drafter drafts whole chains, a wrong one backs off to probes", async () => {
  const params: SamplingParams = { temperature: 0, topP: 1, topK: -1 };
  const reqs = requests(params, 60, 2);
  const plain = await rollout(reqs);
  const run = async (drafter: CoupledModelDrafter) => {
    const spec = await rollout(reqs, { drafter, draftLen: 4 });
    spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
    await drafter.close();
    return { ...spec.stats, drafterMetrics: spec.drafterMetrics };
  };
  const good = await run(new CoupledModelDrafter(await OnnxEngine.load(tinyDir()), { cost: 0.2 }));
  assert.ok(good.drafter!.acceptedTokens >= 0.95 * good.drafter!.proposedTokens);
  assert.ok(good.drafter!.proposedTokens >= 3 * good.drafter!.verifySeqSteps, `${good.drafter!.proposedTokens} in ${good.drafter!.verifySeqSteps} steps`);

  const blind = await run(new CoupledModelDrafter(new ShiftedEngine(await OnnxEngine.load(tinyDir())), { costAware: false }));
  const wrong = new CoupledModelDrafter(new ShiftedEngine(await OnnxEngine.load(tinyDir())), { cost: 0.2, probeEvery: 8 });
  const aware = await run(wrong);
  assert.equal(blind.drafter!.acceptedTokens, 0);
  assert.ok(blind.drafter!.proposedTokens >= 3 * blind.seqSteps, `${blind.drafter!.proposedTokens} in ${blind.seqSteps} steps`);
  // after a few misses the measured acceptance is below the cost: probes only, paid from 2% of the
  // verifier's time (a probe here costs a whole verifier step: the drafter is the policy itself)
  assert.ok(aware.drafter!.proposedTokens < 0.25 * aware.seqSteps, `${aware.drafter!.proposedTokens} in ${aware.seqSteps} steps`);
  assert.ok(aware.drafter!.proposedTokens > 0, "probes keep measuring");
  assert.ok(wrong.metrics().acceptance < 0.2, `acceptance ${wrong.metrics().acceptance}`);
  assert.ok(wrong.acceptance(1) < 0.2, `estimate at confidence 1: ${wrong.acceptance(1)}`);

  // measured cost: the policy drafting for itself costs about a verifier step per token
  const self = new CoupledModelDrafter(await OnnxEngine.load(tinyDir()));
  const timed = await run(self);
  assert.ok(self.metrics().cost > 0.2, `cost ${self.metrics().cost}`);
  assert.equal(timed.drafterMetrics?.cost, self.metrics().cost);
});

test("the acceptance table learns that a drafter agreeing with the policy is accepted whatever its confidence", async () => {
  // at T=1 tiny's distributions are nearly flat: its own drafts carry small probabilities, yet the
  // verifier draws the same tokens with the same noise; confidence alone would stop every chain
  const params: SamplingParams = { temperature: 1, topP: 1, topK: -1 };
  const reqs = requests(params, 60, 2);
  const plain = await rollout(reqs);
  const self = new CoupledModelDrafter(await OnnxEngine.load(tinyDir()), { cost: 0.2 });
  const spec = await rollout(reqs, { drafter: self, draftLen: 4 });
  spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
  const d = spec.stats.drafter!;
  assert.ok(d.proposedTokens >= 3 * d.verifySeqSteps, `${d.proposedTokens} in ${d.verifySeqSteps} steps`);
  assert.ok(self.acceptance(0.05) > 0.9, `estimate at confidence 0.05: ${self.acceptance(0.05)}`);
  assert.ok(self.metrics().acceptance > 0.95);
  await self.close();
});

test("the default model drafter, tiny's 8-bit copy, is exact and mostly accepted", async () => {
  const drafter = await makeDrafter("model", { modelDir: tinyDir(), draftCost: 0.2 });
  for (const [label, params] of PARAMS) {
    const reqs = requests(params, 40, 2);
    const plain = await rollout(reqs);
    const spec = await rollout(reqs, { drafter, draftLen: 4 });
    spec.results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds, label));
    const d = spec.stats.drafter!;
    assert.equal(d.errors, 0);
    assert.ok(d.acceptedTokens >= 0.8 * d.proposedTokens, `${label}: ${d.acceptedTokens} of ${d.proposedTokens}`);
  }
  await drafter.close?.();
});

/** Fails the steps numbered in `failing`; tracks the sequences it holds. */
class FlakyEngine extends WrappedEngine {
  readonly live = new Set<number>();
  private steps = 0;
  constructor(inner: Engine, private readonly failing: Set<number>) {
    super(inner);
  }
  override async step(batch: SeqStep[]) {
    if (this.failing.has(++this.steps)) throw new Error(`step ${this.steps} failed`);
    for (const s of batch) this.live.add(s.seqId);
    return this.inner.step(batch);
  }
  override release(id: number) {
    this.live.delete(id);
    this.inner.release(id);
  }
}

/** A verifier slower than its drafter, as a real policy is: each step takes `ms` longer. */
class SlowEngine extends WrappedEngine {
  constructor(inner: Engine, private readonly ms: number) {
    super(inner);
  }
  override async step(batch: SeqStep[]) {
    const results = await this.inner.step(batch);
    await new Promise((resolve) => setTimeout(resolve, this.ms));
    return results;
  }
}

test("decoupled: the model drafter running ahead on its own thread is exact at every temperature, and the policy as its own drafter is accepted whole", async () => {
  // both engines off the main thread, as in a decoupled rollout: drafting and verifying overlap;
  // tiny's drafter costs what it verifies, so the verifier is slowed to let the drafter get ahead
  const verifier = new SlowEngine(await ThreadedEngine.load(tinyDir(), { threads: 1 }), 4);
  const drafter = await makeDrafter("model", { modelDir: tinyDir(), drafterModel: tinyDir(), threaded: true, threads: 1, decoupled: true, draftCost: "off" });
  try {
    for (const [label, params] of PARAMS) {
      const reqs = requests(params, 40, 2);
      const plain = await rollout(reqs);
      const core = new RolloutCore(verifier, 5, { drafter, draftLen: 4 });
      const results = await Promise.all(reqs.map((r) => core.submit(r)));
      results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds, label));
      const d = core.stats.drafter!;
      assert.equal(d.errors, 0);
      assert.ok(d.proposedTokens > 0.5 * d.verifySeqSteps && d.verifySeqSteps > 0.2 * core.stats.seqSteps, `${label}: ${d.proposedTokens} in ${d.verifySeqSteps} of ${core.stats.seqSteps} steps`);
      assert.ok(d.acceptedTokens >= 0.95 * d.proposedTokens, `${label}: ${d.acceptedTokens} of ${d.proposedTokens}`);
    }
  } finally {
    await drafter.close?.();
    await verifier.close();
  }
});

test("decoupled: drafter steps that fail cost counted errors, never a request or a token; ended requests free the drafter's sequences", async () => {
  const params: SamplingParams = { temperature: 1, topP: 1, topK: -1 };
  const reqs = requests(params, 40, 2);
  const plain = await rollout(reqs);
  const flaky = new FlakyEngine(await OnnxEngine.load(tinyDir()), new Set([3, 4, 30]));
  const drafter = new DecoupledModelDrafter(flaky, { costAware: false, minReach: 0 });
  const core = new RolloutCore(new SlowEngine(engine, 4), 5, { drafter, draftLen: 4 });
  const results = await Promise.all(reqs.map((r) => core.submit(r)));
  results.forEach((r, i) => assert.deepEqual(r.tokenIds, plain.results[i].tokenIds));
  const d = core.stats.drafter!;
  assert.ok(d.errors >= 2, `${d.errors} errors`);
  assert.match(d.lastError ?? "", /model drafter failed: step \d+ failed/);
  assert.ok(d.acceptedTokens > 0.3 * core.stats.generatedTokens, `drafting resumed after the failures: ${d.acceptedTokens} of ${core.stats.generatedTokens}`);
  await drafter.close();
  assert.deepEqual([...flaky.live], []);
});

test("the suffix drafter learns from finished siblings: a second epoch accepts more", async () => {
  const drafter = new SuffixDrafter();
  const params: SamplingParams = { temperature: 0, topP: 1, topK: -1 };
  const reqs = requests(params, 40, 1);
  const first = await rollout(reqs, { drafter, draftLen: 6 });
  const second = await rollout(reqs, { drafter, draftLen: 6 });
  second.results.forEach((r, i) => assert.deepEqual(r.tokenIds, first.results[i].tokenIds));
  assert.ok(second.stats.drafter!.acceptedTokens > first.stats.drafter!.acceptedTokens);
  assert.ok(drafter.historyDocuments >= 2 * reqs.length);
});
