/**
 * An engine that does no model work: each step emits one pseudo-random token per sequence (never
 * EOS, so requests run to their budget) and accepts no draft. It exists to measure what the control
 * plane (core, drafters, service, encoding) costs per step on its own; it is not a model.
 */
import type { Engine, EngineInfo, SeqResult, SeqStep } from "./engine";

export class NullEngine implements Engine {
  readonly info: EngineInfo;
  private readonly lengths = new Map<number, number>();

  constructor(vocabSize = 49152, maxContext = 1 << 20) {
    this.info = { name: "null (no model work)", model: "null", vocabSize, maxContext, eosIds: [0] };
  }

  async step(batch: SeqStep[]): Promise<SeqResult[]> {
    return batch.map((s) => {
      const len = (this.lengths.get(s.seqId) ?? 0) + s.append.length;
      this.lengths.set(s.seqId, len);
      // a cheap hash of (seed, position) in [1, V): deterministic, and not what a drafter guesses
      const token = 1 + ((Math.imul(s.seed % 0x7fffffff ^ len, 0x9e3779b1) >>> 0) % (this.info.vocabSize - 1));
      return { seqId: s.seqId, tokens: [token], logprobs: [-1], accepted: 0 };
    });
  }

  cachedLength(seqId: number): number {
    return this.lengths.get(seqId) ?? 0;
  }

  truncate(seqId: number, length: number): void {
    this.lengths.set(seqId, Math.min(length, this.cachedLength(seqId)));
  }

  release(seqId: number): void {
    this.lengths.delete(seqId);
  }

  sequences(): number[] {
    return [...this.lengths.keys()];
  }

  kvBytes(): number {
    return 0;
  }

  async settledKvBytes(): Promise<number> {
    return 0;
  }

  async releaseMemory(): Promise<number> {
    return 0;
  }

  async restoreMemory(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {}
}
