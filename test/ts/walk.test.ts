import { test } from "node:test";
import assert from "node:assert/strict";
import { endsSample, walkTrie } from "../../src/engine/walk";
import { trieDepths, triePath } from "../../src/engine/trie";

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

test("a stop id ends the walk like EOS: emitted, nothing after it, in any branch", () => {
  // root -> 5 -> {6 -> 7, 42 -> 8}; 42 is a stop id sitting mid-branch
  const trie = { tokens: [5, 6, 42, 7, 8], parents: [-1, 0, 0, 1, 2] };
  const w = walkTrie(trie, oracle(trie, [5, 42, 8, 9]), [99], 10, [42]);
  assert.deepEqual(w.tokens, [5, 42]);
  assert.deepEqual(w.acceptedNodes, [0]); // as after EOS: the stop token's KV is never needed
  // without the stop id the same walk goes on through the branch
  assert.deepEqual(walkTrie(trie, oracle(trie, [5, 42, 8, 9]), [99], 10).tokens, [5, 42, 8, 9]);
  assert.ok(endsSample(99, [99]) && endsSample(42, [99], [42]) && !endsSample(42, [99]));
});
