/**
 * Fastest-of-N's merge: the tries several drafters proposed for one request become one trie, each
 * distinct token path once (a prefix two drafters agree on is verified once), every node remembering
 * which drafters proposed it and with what score, so the acceptance it earns is credited to each.
 */
import type { Trie } from "../engine/trie";

export interface Proposal {
  /** Index of the drafter in the policy's drafter list. */
  drafter: number;
  trie: Trie;
}

export interface MergedTrie extends Trie {
  /** Per node: the drafters that proposed it and the score each gave (its estimated reach). */
  sources: { drafter: number; score: number }[][];
  /** Per proposal: the merged index of each of its nodes. */
  mapped: number[][];
}

/** Merges `proposals` (every trie parents-first); the result is parents-first too. */
export function mergeTries(proposals: readonly Proposal[]): MergedTrie {
  const out: MergedTrie = { tokens: [], parents: [], sources: [], mapped: [] };
  // child lookup: (parent index, token) -> merged index
  const index = new Map<number, number>();
  const key = (parent: number, token: number) => (parent + 1) * 4294967296 + token;
  for (const { drafter, trie } of proposals) {
    const mapped = new Array<number>(trie.tokens.length);
    for (let i = 0; i < trie.tokens.length; i++) {
      const parent = trie.parents[i] < 0 ? -1 : mapped[trie.parents[i]];
      const k = key(parent, trie.tokens[i]);
      let m = index.get(k);
      if (m === undefined) {
        m = out.tokens.length;
        out.tokens.push(trie.tokens[i]);
        out.parents.push(parent);
        out.sources.push([]);
        index.set(k, m);
      }
      out.sources[m].push({ drafter, score: trie.scores?.[i] ?? NaN });
      mapped[i] = m;
    }
    out.mapped.push(mapped);
  }
  return out;
}

/** The nodes of the walk's accepted path: the first `accepted` emitted tokens, followed down the trie. */
export function acceptedPath(trie: Trie, emitted: readonly number[], accepted: number): number[] {
  const path: number[] = [];
  let parent = -1;
  for (let d = 0; d < accepted; d++) {
    let next = -1;
    for (let i = 0; i < trie.tokens.length; i++) {
      if (trie.parents[i] === parent && trie.tokens[i] === emitted[d]) {
        next = i;
        break;
      }
    }
    if (next < 0) break;
    path.push(next);
    parent = next;
  }
  return path;
}

/** The sub-trie of the nodes in `keep` (a set closed under parents), re-indexed parents-first. */
export function subTrie(trie: Trie, keep: readonly number[]): Trie {
  const sorted = [...keep].sort((a, b) => a - b); // parents precede children in the source
  const newIndex = new Map(sorted.map((old, i) => [old, i]));
  return {
    tokens: sorted.map((i) => trie.tokens[i]),
    parents: sorted.map((i) => (trie.parents[i] < 0 ? -1 : newIndex.get(trie.parents[i])!)),
  };
}
