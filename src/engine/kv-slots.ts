/**
 * The ONNX engine's KV cache: buffers it owns, laid out so a step's past is a zero-copy view.
 *
 * Per layer, keys are [S, KV, C, D] and values [S, KV, D, C] (transposed), where S is the slot
 * capacity and C the context capacity: the layouts in which the graph's attention streams each of
 * them as the left-hand matrix of its matmul (see onnx_graph.py). Every live sequence owns
 * one slot, and live sequences always occupy slots [0, live): a release moves the last sequence into
 * the freed slot. A batch whose slots form a contiguous range is handed to onnxruntime as subarray
 * views of these buffers (no copy); any other batch is gathered into a scratch buffer.
 *
 * C is shared by all slots and is the past length every step attends over (the tail beyond each
 * sequence's length is masked), so it follows the live lengths: rounded up to CONTEXT_GRANULE, grown
 * when a step needs more, shrunk when the longest live sequence falls below half of it.
 */
export const CONTEXT_GRANULE = 64;

export interface PastViews {
  /** Past length P of the views (the context capacity, or 0 when no sequence has a past). */
  length: number;
  keys: Float32Array[];
  values: Float32Array[];
}

export class KvSlots {
  private slotCap = 0;
  private ctxCap = 0;
  private keys: Float32Array[] = [];
  private values: Float32Array[] = [];
  private readonly slotOf = new Map<number, number>();
  private seqAt: number[] = [];
  private lengths: number[] = [];

  constructor(readonly layers: number, readonly kvHeads: number, readonly headDim: number) {}

  get live(): number {
    return this.seqAt.length;
  }

  get contextCapacity(): number {
    return this.ctxCap;
  }

  /** Bytes the key and value buffers hold. */
  get bytes(): number {
    let n = 0;
    for (const b of [...this.keys, ...this.values]) n += b.byteLength;
    return n;
  }

  /** The live sequences' ids. */
  ids(): number[] {
    return [...this.slotOf.keys()];
  }

  has(seqId: number): boolean {
    return this.slotOf.has(seqId);
  }

  length(seqId: number): number {
    const s = this.slotOf.get(seqId);
    return s === undefined ? 0 : this.lengths[s];
  }

  /** The slot of `seqId`, allocating the next free one for a new sequence. */
  slot(seqId: number): number {
    let s = this.slotOf.get(seqId);
    if (s !== undefined) return s;
    s = this.seqAt.length;
    if (s >= this.slotCap) this.resize(Math.max(4, this.slotCap * 2), this.ctxCap);
    this.slotOf.set(seqId, s);
    this.seqAt.push(seqId);
    this.lengths.push(0);
    return s;
  }

  truncate(seqId: number, length: number): void {
    this.lengths[this.slotOf.get(seqId)!] = length;
  }

  /** Frees the slot of `seqId`, moving the last live sequence into it. */
  release(seqId: number): void {
    const s = this.slotOf.get(seqId);
    if (s === undefined) return;
    const last = this.seqAt.length - 1;
    if (s !== last) {
      this.copySlot(last, s, this.lengths[last]);
      const moved = this.seqAt[last];
      this.seqAt[s] = moved;
      this.lengths[s] = this.lengths[last];
      this.slotOf.set(moved, s);
    }
    this.seqAt.pop();
    this.lengths.pop();
    this.slotOf.delete(seqId);
    if (this.seqAt.length === 0) this.resize(this.slotCap, 0);
  }

  /** Makes room for `needed` positions in every slot; shrinks when far above what is live. */
  fitContext(needed: number): void {
    const longest = Math.max(needed, ...this.lengths);
    const target = Math.ceil(longest / CONTEXT_GRANULE) * CONTEXT_GRANULE;
    if (target > this.ctxCap || target * 2 < this.ctxCap) this.resize(this.slotCap, target);
  }

  /** Past inputs for the slots [first, first + count), as views when `contiguous`. */
  past(slots: number[]): PastViews {
    const P = this.ctxCap;
    if (slots.every((s) => this.lengths[s] === 0)) {
      return { length: 0, keys: this.keys.map(() => new Float32Array(0)), values: this.values.map(() => new Float32Array(0)) };
    }
    const per = this.kvHeads * this.headDim * P;
    const first = slots[0];
    if (slots.every((s, i) => s === first + i)) {
      return {
        length: P,
        keys: this.keys.map((k) => k.subarray(first * per, (first + slots.length) * per)),
        values: this.values.map((v) => v.subarray(first * per, (first + slots.length) * per)),
      };
    }
    const gather = (bufs: Float32Array[]) =>
      bufs.map((b) => {
        const out = new Float32Array(slots.length * per);
        slots.forEach((s, i) => out.set(b.subarray(s * per, (s + 1) * per), i * per));
        return out;
      });
    return { length: P, keys: gather(this.keys), values: gather(this.values) };
  }

  /**
   * Appends rows of a step's new K/V ([B, KV, N, D] per layer) to `seqId`: row `rows[r]` of batch
   * entry `b` goes to position length + r.
   */
  append(seqId: number, b: number, N: number, rows: number[], newKeys: Float32Array[], newValues: Float32Array[]): void {
    const s = this.slotOf.get(seqId)!;
    const { kvHeads: KV, headDim: D } = this;
    const C = this.ctxCap;
    const start = this.lengths[s];
    if (start + rows.length > C) throw new Error(`internal: slot ${s} overflows its context capacity ${C}`);
    for (let l = 0; l < this.layers; l++) {
      const nk = newKeys[l];
      const nv = newValues[l];
      const K = this.keys[l];
      const V = this.values[l];
      for (let h = 0; h < KV; h++) {
        const base = (s * KV + h) * C * D;
        for (let r = 0; r < rows.length; r++) {
          const src = ((b * KV + h) * N + rows[r]) * D;
          const pos = start + r;
          K.set(nk.subarray(src, src + D), base + pos * D);
          for (let d = 0; d < D; d++) V[base + d * C + pos] = nv[src + d];
        }
      }
    }
    this.lengths[s] = start + rows.length;
  }

  clear(): void {
    this.slotOf.clear();
    this.seqAt = [];
    this.lengths = [];
    this.resize(0, 0);
  }

  /** For benchmarks: gives `seqId` a past of `length` positions of zeros. */
  fillSynthetic(seqId: number, length: number): void {
    const s = this.slot(seqId);
    this.fitContext(length + 1);
    this.lengths[s] = length;
  }

  private copySlot(from: number, to: number, length: number): void {
    const { kvHeads: KV, headDim: D } = this;
    const C = this.ctxCap;
    const per = KV * D * C;
    for (let l = 0; l < this.layers; l++) {
      const K = this.keys[l];
      for (let h = 0; h < KV; h++) {
        const src = from * per + h * C * D;
        K.copyWithin(to * per + h * C * D, src, src + length * D);
      }
      const V = this.values[l];
      for (let row = 0; row < KV * D; row++) {
        V.copyWithin(to * per + row * C, from * per + row * C, from * per + row * C + length);
      }
    }
  }

  private resize(slotCap: number, ctxCap: number): void {
    const { kvHeads: KV, headDim: D } = this;
    const live = this.seqAt.length;
    const keep = Math.min(ctxCap, this.ctxCap);
    /** [.., C, D] rows, or `transposed` [.., D, C], re-laid out for the new capacities. */
    const remap = (old: Float32Array, transposed: boolean): Float32Array => {
      const next = new Float32Array(slotCap * KV * D * ctxCap);
      if (ctxCap === this.ctxCap) {
        next.set(old.subarray(0, live * KV * D * ctxCap));
        return next;
      }
      for (let s = 0; s < live; s++) {
        const n = Math.min(this.lengths[s], keep);
        for (let h = 0; h < KV; h++) {
          if (transposed) {
            for (let d = 0; d < D; d++) {
              const src = ((s * KV + h) * D + d) * this.ctxCap;
              next.set(old.subarray(src, src + n), ((s * KV + h) * D + d) * ctxCap);
            }
          } else {
            const src = (s * KV + h) * this.ctxCap * D;
            next.set(old.subarray(src, src + n * D), (s * KV + h) * ctxCap * D);
          }
        }
      }
      return next;
    };
    const layers = Array.from({ length: this.layers }, (_, l) => l);
    this.keys = layers.map((l) => remap(this.keys[l] ?? new Float32Array(0), false));
    this.values = layers.map((l) => remap(this.values[l] ?? new Float32Array(0), true));
    this.slotCap = slotCap;
    this.ctxCap = ctxCap;
  }
}
