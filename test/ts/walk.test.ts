import { test } from "node:test";
import assert from "node:assert/strict";
import { walkTrie } from "../../src/engine/walk";
import { trieDepths, triePath } from "../../src/engine/trie";
import { SamplingPool, runWalkJob, type WalkJob } from "../../src/engine/sampling-pool";
import { Sampler } from "../../src/sampling/sampler";

/** A "target" that samples a fixed continuation: the token after k emitted tokens is seq[k]. */
function oracle(trie: { tokens: number[]; parents: number[] }, seq: number[]) {
  return (node: number) => {
    const depth = node < 0 ? 0 : triePath(trie, node).length;
    return { token: seq[depth], logprob: -depth };
  };
}

test("a fully accepted chain emits every draft token plus the bonus sample", () => {
  const trie = { tokens: [5, 6, 7], parents: [-1, 0, 1] };
  const w = walkTrie(trie, oracle(trie, [5, 6, 7, 8]), [99], 10);
  assert.deepEqual(w.tokens, [5, 6, 7, 8]);
  assert.deepEqual(w.acceptedNodes, [0, 1, 2]);
});

test("a mismatch emits the correction and stops; branches are followed by the sample", () => {
  // root -> 5 -> {6, 9}; 6 -> 1
  const trie = { tokens: [5, 6, 9, 1], parents: [-1, 0, 0, 1] };
  const w = walkTrie(trie, oracle(trie, [5, 9, 3]), [99], 10);
  assert.deepEqual(w.tokens, [5, 9, 3]);
  assert.deepEqual(w.acceptedNodes, [0, 2]);
  const first = walkTrie(trie, oracle(trie, [4]), [99], 10);
  assert.deepEqual(first.tokens, [4]);
  assert.deepEqual(first.acceptedNodes, []);
});

test("nothing is emitted after EOS, even when the trie continues", () => {
  const trie = { tokens: [5, 99, 7], parents: [-1, 0, 1] };
  const w = walkTrie(trie, oracle(trie, [5, 99, 7, 8]), [99], 10);
  assert.deepEqual(w.tokens, [5, 99]);
  assert.deepEqual(w.acceptedNodes, [0]);
});

test("at most maxEmit tokens are emitted", () => {
  const trie = { tokens: [5, 6, 7], parents: [-1, 0, 1] };
  const w = walkTrie(trie, oracle(trie, [5, 6, 7, 8]), [99], 2);
  assert.deepEqual(w.tokens, [5, 6]);
  assert.deepEqual(w.acceptedNodes, [0]);
});

test("malformed tries are rejected", () => {
  assert.throws(() => trieDepths({ tokens: [1, 2], parents: [-1] }), /parents/);
  assert.throws(() => trieDepths({ tokens: [1, 2], parents: [1, -1] }), /precede/);
  assert.deepEqual(trieDepths({ tokens: [1, 2, 3, 4], parents: [-1, 0, -1, 1] }), [1, 2, 1, 3]);
});

test("the sampling pool walks the same whether a batch-1 chain's rows are sampled ahead on several threads or walked on one", async () => {
  const vocab = 300;
  const sampler = new Sampler(vocab);
  const pool = new SamplingPool(vocab, [], 2);
  assert.equal(pool.threads, 2, "the test needs the worker thread (run from dist/)");
  let seed = 1;
  const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 8 - 4;
  try {
    for (const [temperature, wrongAt] of [[1, -1], [1, 2], [0.7, 0], [0, 3], [1, 5]] as const) {
      const rows = 6;
      const logits = Float32Array.from({ length: rows * vocab }, rand);
      const params = { temperature, topK: 0, topP: 1 };
      // a chain of five drafts that holds the target's own samples, but for one wrong token
      const tokens: number[] = [];
      for (let d = 0; d < 5; d++) {
        const s = sampler.sample(logits.subarray(d * vocab, (d + 1) * vocab), params, 11, 40 + d).token;
        tokens.push(d === wrongAt ? (s + 1) % vocab : s);
      }
      const job: WalkJob = {
        tokens,
        parents: [-1, 0, 1, 2, 3],
        depths: [1, 2, 3, 4, 5],
        rows: [0, 1, 2, 3, 4, 5],
        rootPosition: 40,
        params,
        seed: 11,
        maxEmit: 10,
      };
      const [ahead] = await pool.run([job], logits, rows);
      assert.deepEqual(ahead, runWalkJob(job, logits, vocab, sampler, []));
      assert.equal(ahead.acceptedNodes.length, wrongAt < 0 ? 5 : wrongAt);
    }
  } finally {
    await pool.close();
  }
});
