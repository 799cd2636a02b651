/**
 * The suffix drafter's per-prompt history: one SuffixTrie per prompt key, fed every finished response
 * of that prompt (earlier epochs' responses, finished siblings of the same GRPO group).
 *
 * Why bounded: a server sees an open-ended stream of prompts, and an unbounded map kept a trie for
 * every prompt it ever saw (a suffix server grew from 110 MB to 619 MB over 3000 fresh 48-token
 * prompts, 891 MB over 6000, without end). The store is bounded both by the number of prompts and by
 * the total number of trie nodes (the sum of `SuffixTrie.size`): the node bound caps the typed-array
 * columns, which hold almost all of a trie's bytes; the prompt bound caps the fixed cost of each
 * entry, which a tiny trie pays whatever its size.
 *
 * What is evicted: whole tries, least recently used first, where "used" is a `get` (a draft step that
 * looked the prompt up) or an `add` (a finished response). A prompt still being sampled, or whose
 * group just finished, is the last to go; a prompt not seen since many others were is the first.
 * An evicted prompt starts afresh on its next finished response. The trie just added to is never
 * evicted to make room for others; if it alone holds more than `maxNodes` nodes it is dropped too
 * (the same restart as the cross-prompt `global` trie past its bound), so `nodes <= maxNodes` and
 * `size <= maxPrompts` hold after every `add`.
 *
 * The LRU order is a Map's insertion order: a touch is a delete and a set, eviction takes the first
 * entry.
 */
// SuffixTrie comes from suffix.ts, which imports this module in turn: both use the other only inside
// functions (never at module load), so the cycle is harmless under CommonJS in either load order.
import { SuffixTrie } from "./suffix";

/**
 * Default prompt bound. A trie costs at least ~8.8 KB however small (7 columns x 256 initial slots x
 * 4 B = 7 KB, plus ~1.6 KB of objects; measured on 20 000 one-document tries), so 20 000 prompts
 * hold at most ~175 MB of that fixed cost. Enough for the prompts of several GRPO steps in flight,
 * and above what the node bound lets a realistic workload keep anyway (48-token prompts with 32-token
 * responses make ~1 550 nodes per prompt, so 16M nodes hold ~10 000 of them).
 */
export const DEFAULT_HISTORY_MAX_PROMPTS = 20_000;

/**
 * Default node bound. A node costs 28 B (7 Int32 columns) per slot and the columns double, so
 * 28-56 B per node, plus the hash maps of high fan-out nodes; measured: 38-41 B per node for tries of
 * 1 550 to 3 million nodes, 58 B just after a doubling. At ~60 B per node in the worst case,
 * 16M nodes are ~0.96 GB (~0.64 GB at the typical 40 B), plus the ~175 MB prompt floor and the
 * `global` trie (2M nodes, ~120 MB): the suffix drafter stays under ~1.3 GB, a small share of a
 * 24 GiB machine that also holds the model and its KV cache.
 */
export const DEFAULT_HISTORY_MAX_NODES = 16_000_000;

export interface HistoryStoreOptions {
  /** Most prompts (tries) held. */
  maxPrompts: number;
  /** Most trie nodes held, summed over the tries (`SuffixTrie.size`). */
  maxNodes: number;
}

export class HistoryStore {
  private readonly tries = new Map<string, SuffixTrie>();
  private total = 0;
  readonly maxPrompts: number;
  readonly maxNodes: number;
  /** Tries dropped so far (least recently used ones, and any trie that alone outgrew `maxNodes`). */
  evictions = 0;

  constructor(opts: Partial<HistoryStoreOptions> = {}) {
    this.maxPrompts = opts.maxPrompts ?? DEFAULT_HISTORY_MAX_PROMPTS;
    this.maxNodes = opts.maxNodes ?? DEFAULT_HISTORY_MAX_NODES;
    for (const [k, v] of [["maxPrompts", this.maxPrompts], ["maxNodes", this.maxNodes]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`HistoryStore ${k} must be a positive integer, got ${v}`);
    }
  }

  /** Prompts held. */
  get size(): number {
    return this.tries.size;
  }

  /** Trie nodes held, over all prompts. */
  get nodes(): number {
    return this.total;
  }

  /**
   * The trie of `key`, marked as recently used. Read it only (`match`, `grow`): documents go in
   * through `add`, which keeps the node count.
   */
  get(key: string): SuffixTrie | undefined {
    const t = this.tries.get(key);
    if (t) {
      this.tries.delete(key);
      this.tries.set(key, t);
    }
    return t;
  }

  /** Whether `key` is held, without marking it as used. */
  has(key: string): boolean {
    return this.tries.has(key);
  }

  /**
   * Adds a document to the trie of `key` (created with `depth` if absent; an existing trie keeps its
   * own depth), marks it most recently used, then evicts least recently used tries until both bounds
   * hold. The trie of `key` goes last, only when it alone exceeds `maxNodes`.
   */
  add(key: string, tokens: readonly number[], depth: number): void {
    let t = this.tries.get(key);
    if (t) {
      this.tries.delete(key);
      this.total -= t.size;
    } else {
      t = new SuffixTrie(depth);
    }
    t.add(tokens);
    this.tries.set(key, t);
    this.total += t.size;
    // `key` is the newest entry: the oldest is another key as long as there is another one
    while (this.tries.size > this.maxPrompts || this.total > this.maxNodes) {
      const [oldest, trie] = this.tries.entries().next().value as [string, SuffixTrie];
      this.tries.delete(oldest);
      this.total -= trie.size;
      this.evictions++;
    }
  }

  /** Drops every trie (evictions are not counted). */
  clear(): void {
    this.tries.clear();
    this.total = 0;
  }
}
