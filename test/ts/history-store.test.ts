import { test } from "node:test";
import assert from "node:assert/strict";
import { HistoryStore } from "../../src/drafters/history-store";
import { SuffixDrafter, SuffixTrie } from "../../src/drafters/suffix";
import { promptKey, type DraftRequest } from "../../src/drafters/drafter";
import type { SamplingParams } from "../../src/sampling/sampler";

const PARAMS: SamplingParams = { temperature: 1, topP: 1, topK: -1 };
const DEPTH = 32;

/** Deterministic pseudo-random tokens in [lo, lo + span). */
function tokens(seed: number, n: number, lo = 0, span = 32_000): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % span);
  });
}

let nextId = 1;
function request(promptIds: number[], output: number[] = [], seed = 7): DraftRequest {
  return { id: nextId++, historyKey: promptKey(promptIds), promptIds, output, params: PARAMS, seed, maxTokens: 64, maxDepth: 8, maxNodes: 16 };
}

test("the store holds at most maxPrompts prompts and evicts the least recently used", () => {
  const store = new HistoryStore({ maxPrompts: 3, maxNodes: 1_000_000 });
  for (const k of ["a", "b", "c"]) store.add(k, tokens(k.charCodeAt(0), 10), DEPTH);
  assert.equal(store.size, 3);
  assert.ok(store.get("a"), "a read marks it recently used"); // order now b, c, a
  store.add("d", tokens(100, 10), DEPTH); // evicts b
  assert.deepEqual(["a", "b", "c", "d"].map((k) => store.has(k)), [true, false, true, true]);
  store.add("c", tokens(101, 10), DEPTH); // another document for c: order a, d, c
  store.add("e", tokens(102, 10), DEPTH); // evicts a
  assert.deepEqual(["a", "c", "d", "e"].map((k) => store.has(k)), [false, true, true, true]);
  assert.equal(store.size, 3);
  assert.equal(store.evictions, 2);
  assert.equal(store.get("b"), undefined);
});

test("the store holds at most maxNodes trie nodes, counted as the sum of the tries' sizes", () => {
  const maxNodes = 5_000;
  const store = new HistoryStore({ maxPrompts: 1_000, maxNodes });
  const keys: string[] = [];
  for (let i = 0; i < 200; i++) {
    const k = `p${i}`;
    keys.push(k);
    store.add(k, tokens(i + 1, 40), DEPTH);
    if (i % 3 === 0) store.add(k, tokens(i + 10_000, 40), DEPTH); // a second document grows an existing trie
    if (i >= 5) assert.ok(store.get(keys[5]), "a prompt read at every step is never the least recently used");
    assert.ok(store.nodes <= maxNodes, `nodes ${store.nodes} <= ${maxNodes}`);
    assert.ok(store.has(k), "the trie just added to survives while it fits alone");
  }
  assert.ok(store.nodes > maxNodes / 2, `the bound is used: ${store.nodes}`);
  assert.ok(store.evictions > 100);
  // the count is the sum of the sizes of the tries held
  const held = keys.filter((k) => store.has(k));
  assert.equal(store.size, held.length);
  assert.equal(store.nodes, held.reduce((s, k) => s + store.get(k)!.size, 0));
  // the survivors are the most recent ones (and the one read at every step)
  const expected = keys.slice(keys.length - (held.length - 1));
  assert.deepEqual(held.filter((k) => k !== keys[5]), expected);
});

test("a trie that alone outgrows maxNodes is dropped, and its prompt starts afresh", () => {
  const one = new SuffixTrie(DEPTH);
  one.add(tokens(1, 40));
  const store = new HistoryStore({ maxPrompts: 10, maxNodes: one.size + 2 }); // room for "big" alone, not with "small" (7 nodes)
  store.add("small", [1, 2, 3], DEPTH);
  store.add("big", tokens(1, 40), DEPTH); // fits with nothing else: "small" goes
  assert.deepEqual([store.has("small"), store.has("big")], [false, true]);
  store.add("big", tokens(2, 40), DEPTH); // now alone too big: dropped
  assert.equal(store.size, 0);
  assert.equal(store.nodes, 0);
  assert.equal(store.evictions, 2);
  store.add("big", tokens(3, 40), DEPTH);
  assert.equal(store.get("big")!.size, one.size, "a fresh trie, one document");
  assert.throws(() => new HistoryStore({ maxPrompts: 0 }), RangeError);
});

/** Feeds `n` fresh prompts (48 tokens) with ~32-token responses through propose and finish. */
async function feed(drafter: SuffixDrafter, n: number, check?: () => void): Promise<void> {
  for (let i = 0; i < n; i++) {
    const prompt = tokens(i + 1, 48);
    const output = tokens(i + 500_000, 28 + (i % 9));
    // one request's life: a draft at the start, 16 tokens emitted, a draft, the end
    const r0 = request(prompt);
    await drafter.propose([r0]);
    drafter.observe(r0.id, output.slice(0, 16));
    const r = { ...r0, output: output.slice(0, 16) };
    await drafter.propose([r]);
    drafter.finish(r, output);
    check?.();
  }
}

test("a suffix drafter's history stays within its bounds over 3000 fresh prompts; an unbounded one grows", async () => {
  const maxNodes = 200_000;
  const maxPrompts = 500;
  const bounded = new SuffixDrafter({ historyMaxPrompts: maxPrompts, historyMaxNodes: maxNodes });
  let peak = 0;
  await feed(bounded, 3000, () => {
    const s = bounded.historyStats();
    assert.ok(s.nodes <= maxNodes && s.prompts <= maxPrompts, JSON.stringify(s));
    peak = Math.max(peak, s.nodes);
  });
  const b = bounded.historyStats();
  assert.equal(bounded.historyDocuments, 3000);
  assert.ok(b.evictions > 2000, `evictions ${b.evictions}`);
  assert.equal(b.prompts + b.evictions, 3000, "each fresh prompt is held or was evicted once");
  assert.ok(peak > maxNodes * 0.9, `the node bound binds: peak ${peak}`);

  // the prompt bound binds where the node bound is loose
  const fewPrompts = new SuffixDrafter({ historyMaxPrompts: 50, historyMaxNodes: 10_000_000 });
  await feed(fewPrompts, 300, () => assert.ok(fewPrompts.historyStats().prompts <= 50));
  assert.equal(fewPrompts.historyStats().evictions, 250);

  // without effective bounds every prompt keeps its trie
  const unbounded = new SuffixDrafter({ historyMaxPrompts: Number.MAX_SAFE_INTEGER, historyMaxNodes: Number.MAX_SAFE_INTEGER });
  await feed(unbounded, 3000);
  const u = unbounded.historyStats();
  assert.equal(u.prompts, 3000);
  assert.equal(u.evictions, 0);
  assert.ok(u.nodes > 10 * maxNodes, `unbounded nodes ${u.nodes} vs bound ${maxNodes}`);
});

test("drafting works after eviction: a recent prompt drafts from its history, an evicted one only from its own and the global trie", async () => {
  // disjoint tokens: prompt i is 48i .. 48i + 47 (no token twice), responses are drawn from [10000, 42000)
  const promptOf = (i: number) => Array.from({ length: 48 }, (_, j) => 48 * i + j);
  const outputOf = (i: number) => tokens(i + 900_000, 32, 10_000);
  const drafter = new SuffixDrafter({ historyMaxPrompts: 8 });
  const control = new SuffixDrafter(); // same traffic, default bounds: nothing evicted
  for (const d of [drafter, control]) {
    for (let i = 0; i < 20; i++) for (let sibling = 0; sibling < 4; sibling++) d.finish(request(promptOf(i)), outputOf(i));
  }
  assert.equal(drafter.historyStats().prompts, 8);
  assert.equal(drafter.historyStats().evictions, 12);
  assert.equal(control.historyStats().evictions, 0);

  const draft = async (d: SuffixDrafter, i: number, emitted = 0) => (await d.propose([request(promptOf(i), outputOf(i).slice(0, emitted))]))[0];

  // the most recent prompt: the draft for a fresh sample of it is its response's start, from its history
  const recent = await draft(drafter, 19);
  assert.ok(recent.tokens.length > 0);
  assert.deepEqual(recent.tokens.slice(0, 4), outputOf(19).slice(0, 4));
  assert.deepEqual(recent, await draft(control, 19), "the same draft as with nothing evicted");

  // an evicted prompt: the control still drafts its response's start from the history ...
  assert.deepEqual((await draft(control, 0)).tokens.slice(0, 4), outputOf(0).slice(0, 4));
  // ... the bounded drafter has nothing to match the prompt's end with (own trie: the prompt only;
  // global trie: responses only)
  assert.deepEqual(await draft(drafter, 0), { tokens: [], parents: [] });
  // once the sample has emitted part of the response, the global trie continues it
  const cont = await draft(drafter, 0, 8);
  assert.ok(cont.tokens.length > 0);
  assert.deepEqual(cont.tokens.slice(0, 4), outputOf(0).slice(8, 12));

  // a prompt that is drafted for (read) keeps its place while others arrive
  for (let i = 20; i < 40; i++) {
    await draft(drafter, 19);
    drafter.finish(request(promptOf(i)), outputOf(i));
  }
  assert.deepEqual((await draft(drafter, 19)).tokens.slice(0, 4), outputOf(19).slice(0, 4));
  assert.deepEqual(await draft(drafter, 20), { tokens: [], parents: [] }, "prompt 20, never read, was evicted");
});
