/**
 * Prompt lookup (n-gram) drafting: find the most recent earlier occurrence of the sequence's last n
 * tokens (longest n first) in the prompt and output, and propose the tokens that followed it. Up to
 * `branches` distinct continuations (from distinct earlier occurrences) share one trie.
 */
import type { Trie } from "../engine/trie";
import type { DraftRequest, Drafter } from "./drafter";

export class NgramDrafter implements Drafter {
  readonly name = "ngram";

  constructor(private readonly maxN = 4, private readonly minN = 1, private readonly branches = 2) {}

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    return requests.map((r) => this.one(r));
  }

  private one(r: DraftRequest): Trie {
    const seq = [...r.promptIds, ...r.output];
    const trie: Trie = { tokens: [], parents: [] };
    const L = seq.length;
    for (let n = Math.min(this.maxN, L - 1); n >= this.minN; n--) {
      const seen = new Set<number>();
      for (let start = L - n - 1; start >= 0 && seen.size < this.branches; start--) {
        let match = true;
        for (let k = 0; k < n; k++) {
          if (seq[start + k] !== seq[L - n + k]) {
            match = false;
            break;
          }
        }
        const next = start + n;
        if (!match || seen.has(seq[next])) continue;
        seen.add(seq[next]);
        const cont = seq.slice(next, Math.min(next + r.maxDepth, L));
        addPath(trie, cont, r.maxNodes);
      }
      if (trie.tokens.length > 0) return trie;
    }
    return trie;
  }
}

/** Merges `path` into `trie` from the root, sharing existing prefixes, within `maxNodes` nodes. */
export function addPath(trie: Trie, path: readonly number[], maxNodes: number): void {
  let parent = -1;
  for (const t of path) {
    let node = -1;
    for (let i = 0; i < trie.tokens.length; i++) {
      if (trie.parents[i] === parent && trie.tokens[i] === t) {
        node = i;
        break;
      }
    }
    if (node < 0) {
      if (trie.tokens.length >= maxNodes) return;
      trie.tokens.push(t);
      trie.parents.push(parent);
      node = trie.tokens.length - 1;
    }
    parent = node;
  }
}
