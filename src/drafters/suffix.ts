/**
 * Suffix drafting in the manner of SuffixDecoding (Oliaro et al., 2024): suffix tries of bounded depth
 * over the request's own prompt and output, and over a history store keyed by prompt (earlier
 * epochs' responses and finished siblings of the same GRPO group). The longest suffix of the current
 * sequence that occurs in a trie with a continuation is matched, and a speculation tree is grown from
 * it best-first by empirical frequency,
 *
 *     score(path) = prod over its edges of count(child) / count(parent)
 *
 * keeping nodes whose score is at least `minScore`, up to alpha * (match length) nodes (adaptive: a
 * long match earns a long draft) and the step's node and depth budget.
 */
import type { Trie } from "../engine/trie";
import type { DraftRequest, Drafter } from "./drafter";

/** A trie of every substring (up to `depth` tokens) of the documents appended to it, with counts. */
export class SuffixTrie {
  private kids: (Map<number, number> | undefined)[] = [undefined];
  private counts: number[] = [0];
  private depths: number[] = [0];
  /** The token on the edge into each node. */
  private labels: number[] = [-1];

  constructor(readonly depth: number) {}

  get size(): number {
    return this.counts.length;
  }

  /** Starts a document; feed its tokens with `append`. */
  cursor(): number[] {
    return [];
  }

  /** Appends `token` to the document of `active` (the nodes of its open suffixes); returns the new cursor. */
  append(active: number[], token: number): number[] {
    const next = [this.child(0, token, true)];
    for (const node of active) if (this.depths[node] < this.depth) next.push(this.child(node, token, true));
    for (const n of next) this.counts[n]++;
    return next;
  }

  add(tokens: readonly number[]): void {
    let c = this.cursor();
    for (const t of tokens) c = this.append(c, t);
  }

  child(node: number, token: number, create = false): number {
    let m = this.kids[node];
    const hit = m?.get(token);
    if (hit !== undefined || !create) return hit ?? -1;
    if (!m) this.kids[node] = m = new Map();
    const id = this.counts.length;
    m.set(token, id);
    this.kids.push(undefined);
    this.counts.push(0);
    this.depths.push(this.depths[node] + 1);
    this.labels.push(token);
    return id;
  }

  /** The node of the longest suffix of `seq` (at most `maxLen` tokens) that has a continuation. */
  match(seq: readonly number[], maxLen: number): { node: number; length: number } {
    for (let len = Math.min(maxLen, seq.length, this.depth - 1); len >= 1; len--) {
      let node = 0;
      for (let i = seq.length - len; i < seq.length && node >= 0; i++) node = this.child(node, seq[i]);
      if (node > 0 && (this.kids[node]?.size ?? 0) > 0) return { node, length: len };
    }
    return { node: -1, length: 0 };
  }

  /** Best-first speculation tree below `node`. */
  grow(node: number, maxNodes: number, maxDepth: number, minScore: number): Trie {
    const trie: Trie = { tokens: [], parents: [] };
    // frontier entries: [score, trie node, parent index in the trie, depth]
    const frontier: [number, number, number, number][] = [];
    const push = (from: number, parentIdx: number, score: number, depth: number) => {
      const m = this.kids[from];
      if (!m || depth > maxDepth) return;
      for (const [, c] of m) {
        const s = (score * this.counts[c]) / this.counts[from];
        if (s >= minScore) frontier.push([s, c, parentIdx, depth]);
      }
    };
    push(node, -1, 1, 1);
    while (frontier.length > 0 && trie.tokens.length < maxNodes) {
      let best = 0;
      for (let i = 1; i < frontier.length; i++) if (frontier[i][0] > frontier[best][0]) best = i;
      const [score, c, parentIdx, depth] = frontier[best];
      frontier.splice(best, 1);
      trie.tokens.push(this.labels[c]);
      trie.parents.push(parentIdx);
      push(c, trie.tokens.length - 1, score, depth + 1);
    }
    return trie;
  }

}

interface OwnState {
  trie: SuffixTrie;
  cursor: number[];
}

export interface SuffixOptions {
  /** Longest suffix matched (tokens). */
  maxMatch: number;
  /** Draft nodes per matched token. */
  alpha: number;
  minScore: number;
  /** Prompt tokens indexed with each history document (enough to match the generation's start). */
  promptTail: number;
}

export class SuffixDrafter implements Drafter {
  readonly name = "suffix";
  private readonly history = new Map<string, SuffixTrie>();
  private readonly own = new Map<number, OwnState>();
  private readonly opts: SuffixOptions;

  constructor(opts: Partial<SuffixOptions> = {}) {
    this.opts = { maxMatch: 16, alpha: 2, minScore: 0.1, promptTail: 32, ...opts };
  }

  /** Documents indexed in the history store (for stats and tests). */
  historyDocuments = 0;

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    return requests.map((r) => this.one(r));
  }

  private ownState(r: DraftRequest): OwnState {
    let s = this.own.get(r.id);
    if (!s) {
      const trie = new SuffixTrie(this.opts.maxMatch + 32);
      s = { trie, cursor: trie.cursor() };
      for (const t of r.promptIds) s.cursor = trie.append(s.cursor, t);
      for (const t of r.output) s.cursor = trie.append(s.cursor, t);
      this.own.set(r.id, s);
    }
    return s;
  }

  private one(r: DraftRequest): Trie {
    const seq = [...r.promptIds.slice(-this.opts.maxMatch), ...r.output];
    const candidates = [this.history.get(r.historyKey), this.ownState(r).trie];
    let best: { trie: SuffixTrie; node: number; length: number } | undefined;
    for (const t of candidates) {
      if (!t) continue;
      const m = t.match(seq, this.opts.maxMatch);
      if (m.node > 0 && (!best || m.length > best.length)) best = { trie: t, ...m };
    }
    if (!best) return { tokens: [], parents: [] };
    const nodes = Math.min(r.maxNodes, Math.max(1, Math.ceil(this.opts.alpha * best.length)));
    return best.trie.grow(best.node, nodes, r.maxDepth, this.opts.minScore);
  }

  observe(id: number, emitted: readonly number[]): void {
    const s = this.own.get(id);
    if (!s) return;
    for (const t of emitted) s.cursor = s.trie.append(s.cursor, t);
  }

  finish(r: DraftRequest, output: readonly number[]): void {
    this.own.delete(r.id);
    let t = this.history.get(r.historyKey);
    if (!t) this.history.set(r.historyKey, (t = new SuffixTrie(this.opts.maxMatch + 32)));
    t.add([...r.promptIds.slice(-this.opts.promptTail), ...output]);
    this.historyDocuments++;
  }
}
