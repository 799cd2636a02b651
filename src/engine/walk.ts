/**
 * Verification is sampling, then walking the trie (DESIGN.md section 2): at the current node take
 * the target's sample; if a child carries it, descend; otherwise emit it and stop. The correction
 * token and the bonus token are the same rule: the sample at the deepest visited node. Drafts decide
 * how many tokens a step emits, never which. Nothing is emitted after EOS, and at most `maxEmit`.
 *
 * `sampleAt(node)` samples the row of `node` (-1 = the root, the last appended token); only rows the
 * walk visits are ever sampled.
 */
import type { Sample } from "../sampling/sampler";
import { trieChildren, type Trie } from "./trie";

export interface Walk {
  tokens: number[];
  logprobs: number[];
  /** Trie nodes on the accepted path, root-most first (their KV is kept). */
  acceptedNodes: number[];
}

export function walkTrie(
  trie: Trie,
  sampleAt: (node: number) => Sample,
  eosIds: readonly number[],
  maxEmit: number,
): Walk {
  const children = trieChildren(trie);
  const walk: Walk = { tokens: [], logprobs: [], acceptedNodes: [] };
  let node = -1;
  for (;;) {
    const s = sampleAt(node);
    walk.tokens.push(s.token);
    walk.logprobs.push(s.logprob);
    if (eosIds.includes(s.token) || walk.tokens.length >= maxEmit) return walk;
    const next = children[node + 1].find((c) => trie.tokens[c] === s.token);
    if (next === undefined) return walk;
    walk.acceptedNodes.push(next);
    node = next;
  }
}
