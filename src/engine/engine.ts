/**
 * The engine interface shared by the in-process ONNX engine and (later) the Python worker.
 *
 * An engine holds weights and per-sequence KV state and executes one batched step at a time. Each
 * sequence in a step appends tokens (the prompt on its first step, then its last sample) and may
 * bring a trie of draft tokens below the last appended token. The engine samples with the seeded
 * rule and walks the trie (see walk.ts): it returns only the emitted tokens and their log-probs,
 * never vocabulary rows. How the KV state is stored is the engine's business alone.
 */
import type { SamplingParams } from "../sampling/sampler";
import type { Trie } from "./trie";

export interface EngineInfo {
  /** Human-readable description for summaries, e.g. "onnx-cpu smollm2 (30 layers)". */
  name: string;
  model: string;
  vocabSize: number;
  maxContext: number;
  eosIds: readonly number[];
}

export interface SeqStep {
  seqId: number;
  /** Tokens to feed after those already cached; at least one. */
  append: number[];
  trie?: Trie;
  params: SamplingParams;
  seed: number;
  /** At most this many tokens are emitted (the remaining budget), at least 1. */
  maxEmit: number;
  /** The request's own stop token ids: like EOS, the walk emits one and stops (walk.ts `endsSample`). */
  stopIds?: readonly number[];
}

export interface SeqResult {
  seqId: number;
  /** Emitted tokens: accepted draft tokens then the sample at the deepest visited node. */
  tokens: number[];
  logprobs: number[];
  /** How many of `tokens` were draft tokens accepted from the trie. */
  accepted: number;
}

export interface Engine {
  readonly info: EngineInfo;
  step(batch: SeqStep[]): Promise<SeqResult[]>;
  /** Number of tokens whose KV the engine holds for the sequence (0 if unknown). */
  cachedLength(seqId: number): number;
  /** Roll the sequence back to its first `length` cached tokens. */
  truncate(seqId: number, length: number): void;
  release(seqId: number): void;
  /** Ids of the sequences whose state the engine holds. */
  sequences(): number[];
  /** Bytes of KV cache memory the engine holds now (as last reported, where the cache lives elsewhere). */
  kvBytes(): number;
  /** `kvBytes` once the engine has applied every call made before this one (a release included). */
  settledKvBytes(): Promise<number>;
  /**
   * Frees the KV cache memory (for a trainer that needs the device between rollouts); only with no
   * sequence held. Resolves to the bytes still held. A later step, or `restoreMemory`, allocates again.
   */
  releaseMemory(): Promise<number>;
  /** Re-allocates what `releaseMemory` freed; resolves to the bytes held. */
  restoreMemory(): Promise<number>;
  close(): Promise<void>;
}

export class EngineError extends Error {}
