/**
 * Verification is sampling, then walking the trie (docs/SAMPLING.md): at the current node take
 * the target's sample; if a child carries it, descend; otherwise emit it and stop. The correction
 * token and the bonus token are the same rule: the sample at the deepest visited node. Drafts decide
 * how many tokens a step emits, never which. Nothing is emitted after a stop token (an EOS id or one
 * of the request's own stop ids, see `endsSample`), and at most `maxEmit`.
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

/**
 * The one rule for where a sample ends on a token: an EOS id of the model or a stop id of the request
 * (kept in the output, as vLLM does). The walk and the rollout core both ask it, so an engine never
 * emits past the token at which the core ends the sample.
 */
export function endsSample(token: number, eosIds: readonly number[], stopIds: readonly number[] = []): boolean {
  return eosIds.includes(token) || stopIds.includes(token);
}

export function walkTrie(
  trie: Trie,
  sampleAt: (node: number) => Sample,
  eosIds: readonly number[],
  maxEmit: number,
  stopIds: readonly number[] = [],
): Walk {
  const children = trieChildren(trie);
  const walk: Walk = { tokens: [], logprobs: [], acceptedNodes: [] };
  let node = -1;
  for (;;) {
    const s = sampleAt(node);
    walk.tokens.push(s.token);
    walk.logprobs.push(s.logprob);
    if (endsSample(s.token, eosIds, stopIds) || walk.tokens.length >= maxEmit) return walk;
    const next = children[node + 1].find((c) => trie.tokens[c] === s.token);
    if (next === undefined) return walk;
    walk.acceptedNodes.push(next);
    node = next;
  }
}
