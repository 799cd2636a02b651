/**
 * Suffix drafting in the manner of SuffixDecoding (Oliaro et al., 2024): suffix tries of bounded depth
 * over the request's own prompt and output, and over a history store keyed by prompt (earlier
 * epochs' responses and finished siblings of the same GRPO group). The longest suffix of the current
 * sequence that occurs in a trie with a continuation is matched, and a draft is grown from it that
 * follows the request's own sampling noise (see `SuffixTrie.grow`), up to alpha * (match length)
 * nodes (adaptive: a long match earns a long draft) and the step's node and depth budget.
 */
import type { Trie } from "../engine/trie";
import type { DraftRequest, Drafter } from "./drafter";
import { gumbel } from "../sampling/sampler";
import { DEFAULT_HISTORY_MAX_NODES, DEFAULT_HISTORY_MAX_PROMPTS, HistoryStore } from "./history-store";

export { DEFAULT_HISTORY_MAX_NODES, DEFAULT_HISTORY_MAX_PROMPTS } from "./history-store";

/**
 * A trie of every substring (up to `depth` tokens) of the documents appended to it, with counts.
 *
 * Appending a token touches up to `depth` nodes, on every request and every step, so the layout is
 * flat: parallel arrays, children as a sibling list (deep nodes have one or two), and a hash map only
 * for a node whose fan-out grows past FANOUT_MAP (the root, mostly).
 */
export class SuffixTrie {
  // columns of Int32Array, grown by doubling: tries reach millions of nodes, and typed arrays keep
  // them out of the garbage collector's way
  private n = 1;
  private counts = new Int32Array(INITIAL_NODES);
  private depths = new Int32Array(INITIAL_NODES);
  /** The token on the edge into each node. */
  private labels = new Int32Array(INITIAL_NODES).fill(-1, 0, 1);
  /** Children in insertion order (ties in `grow` go to the oldest continuation); 0 (the root, nobody's child) ends a list. */
  private firstChild = new Int32Array(INITIAL_NODES);
  private lastChild = new Int32Array(INITIAL_NODES);
  private nextSibling = new Int32Array(INITIAL_NODES);
  private fanout = new Int32Array(INITIAL_NODES);
  private maps = new Map<number, Map<number, number>>();

  constructor(readonly depth: number) {}

  private growColumns(): void {
    const cap = this.counts.length * 2;
    const grow = (a: Int32Array) => {
      const b = new Int32Array(cap);
      b.set(a);
      return b;
    };
    this.counts = grow(this.counts);
    this.depths = grow(this.depths);
    this.labels = grow(this.labels);
    this.firstChild = grow(this.firstChild);
    this.lastChild = grow(this.lastChild);
    this.nextSibling = grow(this.nextSibling);
    this.fanout = grow(this.fanout);
  }

  get size(): number {
    return this.n;
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
    const map = this.fanout[node] > FANOUT_MAP ? this.maps.get(node) : undefined;
    if (map) {
      const hit = map.get(token);
      if (hit !== undefined || !create) return hit ?? -1;
    } else {
      for (let c = this.firstChild[node]; c > 0; c = this.nextSibling[c]) if (this.labels[c] === token) return c;
      if (!create) return -1;
    }
    if (this.n === this.counts.length) this.growColumns();
    const id = this.n++;
    this.depths[id] = this.depths[node] + 1;
    this.labels[id] = token;
    if (this.lastChild[node] > 0) this.nextSibling[this.lastChild[node]] = id;
    else this.firstChild[node] = id;
    this.lastChild[node] = id;
    const fan = ++this.fanout[node];
    if (map) map.set(token, id);
    else if (fan > FANOUT_MAP) {
      const m = new Map<number, number>();
      for (let c = this.firstChild[node]; c > 0; c = this.nextSibling[c]) m.set(this.labels[c], c);
      this.maps.set(node, m);
    }
    return id;
  }

  /** The node of the longest suffix of `seq` (at most `maxLen` tokens) that has a continuation. */
  match(seq: readonly number[], maxLen: number): { node: number; length: number } {
    for (let len = Math.min(maxLen, seq.length, this.depth - 1); len >= 1; len--) {
      let node = 0;
      for (let i = seq.length - len; i < seq.length && node >= 0; i++) node = this.child(node, seq[i]);
      if (node > 0 && this.fanout[node] > 0) return { node, length: len };
    }
    return { node: -1, length: 0 };
  }

  /**
   * A speculation tree below `node` that follows the request's own noise: at each depth d the child
   * maximising log count(child) + G(d, token) continues the chain, the same Gumbel-max rule the
   * verifier applies to its logits. Where the empirical frequencies are proportional to the target's
   * probabilities on the candidates, the chain holds the verifier's choice whenever any candidate
   * does, so one chain does the work of a tree of every candidate. Spare node budget adds the
   * runner-up candidates as side branches. The chain stops where the estimated chance that the
   * verifier walks that far (the product of `winProbability` along it) falls below `minScore`.
   */
  grow(node: number, maxNodes: number, maxDepth: number, minScore: number, noise: (depth: number, token: number) => number): Trie {
    const trie: Trie & { scores: number[] } = { tokens: [], parents: [], scores: [] };
    const spare: [number, number, number, number][] = []; // [share, token, parent index, reach of the parent]
    let parentIdx = -1;
    let reach = 1; // estimated probability that the verifier walks this far
    for (let depth = 1; depth <= maxDepth && trie.tokens.length < maxNodes; depth++) {
      if (this.fanout[node] === 0) break;
      let best = -1;
      let bestScore = -Infinity;
      let bestNoise = 0;
      for (let c = this.firstChild[node]; c > 0; c = this.nextSibling[c]) {
        const g = noise(depth, this.labels[c]);
        const score = Math.log(this.counts[c]) + g;
        if (score > bestScore) {
          bestScore = score;
          best = c;
          bestNoise = g;
        }
      }
      const reachBefore = reach;
      reach *= winProbability(this.counts[best] / (this.counts[node] + PSEUDO_COUNT), bestNoise);
      if (reach < minScore) break;
      for (let c = this.firstChild[node]; c > 0; c = this.nextSibling[c]) {
        if (c !== best) spare.push([this.counts[c] / this.counts[node], this.labels[c], parentIdx, reachBefore]);
      }
      trie.tokens.push(this.labels[best]);
      trie.parents.push(parentIdx);
      trie.scores.push(reach);
      parentIdx = trie.tokens.length - 1;
      node = best;
    }
    spare.sort((a, b) => b[0] - a[0]);
    for (const [share, token, parent, parentReach] of spare) {
      if (trie.tokens.length >= maxNodes || share < minScore) break;
      trie.tokens.push(token);
      trie.parents.push(parent);
      // the verifier reaches a side branch only where it left the chain: at most the share the chain's choice did not take
      trie.scores.push(parentReach * share);
    }
    return sortParentsFirst(trie);
  }
}

const INITIAL_NODES = 256;

/** Children are found by a list walk up to this fan-out, by a hash map beyond it. */
const FANOUT_MAP = 8;

/** Continuations never seen yet: the estimate share = count / (total + PSEUDO_COUNT) stays below 1. */
const PSEUDO_COUNT = 1;

/**
 * The chance that a token of probability p wins the verifier's Gumbel-max draw given its own noise g:
 * the best of the other tokens is Gumbel(log(1 - p)), so P(log p + g > it) = exp(-(1 - p) / p * e^-g).
 */
export function winProbability(p: number, g: number): number {
  return Math.exp((-(1 - p) / p) * Math.exp(-g));
}

/** Reorders a trie so every parent precedes its children (side branches were appended last). */
function sortParentsFirst(trie: Trie): Trie {
  const n = trie.tokens.length;
  const children: number[][] = Array.from({ length: n + 1 }, () => []);
  trie.parents.forEach((p, i) => children[p + 1].push(i));
  const order: number[] = [];
  const visit = (p: number) => children[p + 1].forEach((c) => (order.push(c), visit(c)));
  visit(-1);
  const newIndex = new Map(order.map((old, i) => [old, i]));
  return {
    tokens: order.map((i) => trie.tokens[i]),
    parents: order.map((i) => (trie.parents[i] < 0 ? -1 : newIndex.get(trie.parents[i])!)),
    ...(trie.scores ? { scores: order.map((i) => trie.scores![i]) } : {}),
  };
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
  /** The cross-prompt trie starts afresh past this many nodes (bounded memory). */
  globalNodes: number;
  /** Deepest draft a trie can continue a full-length match with (drafts stop at the step's depth budget anyway). */
  maxDraftDepth: number;
  /** Most prompts the history store keeps a trie for; least recently used go first (see history-store.ts). */
  historyMaxPrompts: number;
  /** Most trie nodes the history store holds over all prompts (~40-60 B each; see history-store.ts). */
  historyMaxNodes: number;
}

export class SuffixDrafter implements Drafter {
  readonly name = "suffix";
  /** A trie per prompt key, bounded (least recently used prompts are evicted). */
  private readonly history: HistoryStore;
  /** Every finished response, whatever its prompt: phrasing that recurs across prompts. */
  private global: SuffixTrie;
  private readonly own = new Map<number, OwnState>();
  private readonly opts: SuffixOptions;
  /** Every trie indexes substrings up to a match plus a draft: each appended token touches this many nodes. */
  private readonly trieDepth: number;

  constructor(opts: Partial<SuffixOptions> = {}) {
    this.opts = {
      maxMatch: 16,
      alpha: 2,
      minScore: 0.05,
      promptTail: 32,
      globalNodes: 2_000_000,
      maxDraftDepth: 16,
      historyMaxPrompts: DEFAULT_HISTORY_MAX_PROMPTS,
      historyMaxNodes: DEFAULT_HISTORY_MAX_NODES,
      ...opts,
    };
    this.trieDepth = this.opts.maxMatch + this.opts.maxDraftDepth;
    this.global = new SuffixTrie(this.trieDepth);
    this.history = new HistoryStore({ maxPrompts: this.opts.historyMaxPrompts, maxNodes: this.opts.historyMaxNodes });
  }

  /** Documents indexed in the history store (for stats and tests). */
  historyDocuments = 0;

  /** The history store's prompts, trie nodes and evictions so far (for stats and tests). */
  historyStats(): { prompts: number; nodes: number; evictions: number } {
    return { prompts: this.history.size, nodes: this.history.nodes, evictions: this.history.evictions };
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    return requests.map((r) => this.one(r));
  }

  private ownState(r: DraftRequest): OwnState {
    let s = this.own.get(r.id);
    if (!s) {
      const trie = new SuffixTrie(this.trieDepth);
      s = { trie, cursor: trie.cursor() };
      for (const t of r.promptIds) s.cursor = trie.append(s.cursor, t);
      for (const t of r.output) s.cursor = trie.append(s.cursor, t);
      this.own.set(r.id, s);
    }
    return s;
  }

  private one(r: DraftRequest): Trie {
    // only the last maxMatch tokens can match: copying the whole output would cost O(length) per step
    const k = this.opts.maxMatch;
    const seq = r.output.length >= k ? r.output.slice(-k) : [...r.promptIds.slice(-(k - r.output.length)), ...r.output];
    // on equal match lengths the earlier source wins: same prompt, then own text, then any prompt
    const candidates = [this.history.get(r.historyKey), this.ownState(r).trie, this.global];
    let best: { trie: SuffixTrie; node: number; length: number } | undefined;
    for (const t of candidates) {
      if (!t) continue;
      const m = t.match(seq, this.opts.maxMatch);
      if (m.node > 0 && (!best || m.length > best.length)) best = { trie: t, ...m };
    }
    if (!best) return { tokens: [], parents: [] };
    const nodes = Math.min(r.maxNodes, Math.max(1, Math.ceil(this.opts.alpha * best.length)));
    const depth = Math.min(r.maxDepth, nodes);
    // the draft token at depth d sits at absolute position (prompt + output length) + d - 1
    const base = r.promptIds.length + r.output.length - 1;
    return best.trie.grow(best.node, nodes, depth, this.opts.minScore, (d, token) => gumbel(r.seed, base + d, token));
  }

  observe(id: number, emitted: readonly number[]): void {
    const s = this.own.get(id);
    if (!s) return;
    for (const t of emitted) s.cursor = s.trie.append(s.cursor, t);
  }

  finish(r: DraftRequest, output: readonly number[]): void {
    this.own.delete(r.id);
    this.history.add(r.historyKey, [...r.promptIds.slice(-this.opts.promptTail), ...output], this.trieDepth);
    // the cross-prompt trie is bounded by restarting
    if (this.global.size > this.opts.globalNodes) this.global = new SuffixTrie(this.trieDepth);
    this.global.add(output);
    this.historyDocuments++;
  }
}
