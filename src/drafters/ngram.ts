/**
 * Prompt lookup (n-gram) drafting: find the most recent earlier occurrence of the sequence's last n
 * tokens (longest n first) in the prompt and output, and propose the tokens that followed it. Up to
 * `branches` distinct continuations (from distinct earlier occurrences) share one trie.
 */
import type { Trie } from "../engine/trie";
import type { DraftRequest, Drafter } from "./drafter";

interface Index {
  /** The request's prompt then output, as far as indexed. */
  seq: number[];
  /** byN[n - 1]: hash of the n tokens starting at p -> those start positions p, ascending. */
  byN: Map<number, number[]>[];
  /** n-grams ending before this position are indexed. */
  done: number;
}

export class NgramDrafter implements Drafter {
  readonly name = "ngram";
  /** Per request: an n-gram index grown by the new tokens of each step, so a step costs O(new tokens). */
  private readonly index = new Map<number, Index>();

  constructor(private readonly maxN = 4, private readonly minN = 1, private readonly branches = 2) {}

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    return requests.map((r) => this.one(r));
  }

  finish(r: DraftRequest): void {
    this.index.delete(r.id);
  }

  private indexed(r: DraftRequest): Index {
    let ix = this.index.get(r.id);
    if (!ix) this.index.set(r.id, (ix = { seq: [...r.promptIds], byN: Array.from({ length: this.maxN }, () => new Map()), done: 0 }));
    const { seq, byN } = ix;
    const total = r.promptIds.length + r.output.length;
    for (let L = seq.length; L < total; L++) seq.push(r.output[L - r.promptIds.length]);
    // every n-gram that ends before the last token: its continuation is known
    for (let end = ix.done; end < seq.length - 1; end++) {
      for (let n = 1; n <= this.maxN && n <= end + 1; n++) {
        const start = end - n + 1;
        const h = hashOf(seq, start, n);
        let list = byN[n - 1].get(h);
        if (!list) byN[n - 1].set(h, (list = []));
        list.push(start);
      }
    }
    ix.done = Math.max(ix.done, seq.length - 1);
    return ix;
  }

  /**
   * The most recent earlier occurrences of the last n tokens (longest n first), each contributing its
   * continuation if it starts with a token not seen yet, up to `branches` of them.
   */
  private one(r: DraftRequest): Trie {
    const { seq, byN } = this.indexed(r);
    const trie: Trie = { tokens: [], parents: [] };
    const L = seq.length;
    for (let n = Math.min(this.maxN, L - 1); n >= this.minN; n--) {
      const starts = byN[n - 1].get(hashOf(seq, L - n, n));
      if (!starts) continue;
      const seen = new Set<number>();
      for (let k = starts.length - 1; k >= 0 && seen.size < this.branches; k--) {
        const start = starts[k];
        if (start > L - n - 1) continue;
        let match = true;
        for (let q = 0; q < n; q++) {
          if (seq[start + q] !== seq[L - n + q]) {
            match = false; // a hash collision
            break;
          }
        }
        const next = start + n;
        if (!match || seen.has(seq[next])) continue;
        seen.add(seq[next]);
        addPath(trie, seq.slice(next, Math.min(next + r.maxDepth, L)), r.maxNodes);
      }
      if (trie.tokens.length > 0) return { ...trie, scores: matchScores(trie, n, this.maxN) };
    }
    return trie;
  }
}

/**
 * A lookup has no confidence of its own; its score only has to rank, the policy calibrates it against
 * outcomes: per edge (0.3 + 0.6 n / maxN) for a match of n tokens (a longer match is likelier to
 * continue), a later branch (a continuation that already lost once) at half its parent's.
 */
function matchScores(trie: Trie, n: number, maxN: number): number[] {
  const edge = 0.3 + (0.6 * n) / maxN;
  const scores: number[] = [];
  const firstChild = new Map<number, number>();
  trie.parents.forEach((p, i) => {
    const base = p < 0 ? 1 : scores[p];
    const first = firstChild.get(p);
    if (first === undefined) firstChild.set(p, i);
    scores.push(base * edge * (first === undefined ? 1 : 0.5));
  });
  return scores;
}

/** A hash of seq[start .. start + n) (collisions are checked by the caller). */
function hashOf(seq: readonly number[], start: number, n: number): number {
  let h = n;
  for (let i = 0; i < n; i++) h = (Math.imul(h, 0x01000193) ^ seq[start + i]) >>> 0;
  return h;
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
