/**
 * The sampler's per-vocabulary loops as a WebAssembly SIMD kernel (source and math:
 * scripts/sampler-kernel.js; bytes: kernel-wasm.ts). One instance per sampler: it owns the scratch
 * arrays, exposed here as typed-array views of its memory, so no call copies a vocabulary.
 */
import { SAMPLER_KERNEL_WASM } from "./kernel-wasm";

// lib ES2022 without the DOM types has no WebAssembly declarations; this is what the kernel needs
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
};

interface KernelExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  scale_max(logits: number, z: number, n: number, t: number): number;
  exp_all(z: number, pv: number, keep: number, n: number, max: number): number;
  screen(keep: number, pv: number, cand: number, candU: number, n: number, c0: number, k0: number, k1: number, k2: number, bound: number): number;
}

let compiled: object | undefined;

export class VocabKernel {
  /** Input logits (float32), z = logits / T, p = exp(z - max) of kept tokens, kept ids, survivors and their U. */
  readonly logits: Float32Array;
  readonly z: Float64Array;
  readonly pv: Float64Array;
  readonly keep: Uint32Array;
  readonly cand: Uint32Array;
  readonly candU: Float64Array;
  private readonly k: KernelExports;
  private readonly at: { logits: number; z: number; pv: number; keep: number; cand: number; candU: number };

  constructor(readonly size: number) {
    compiled ??= new WebAssembly.Module(Buffer.from(SAMPLER_KERNEL_WASM, "base64"));
    this.k = new WebAssembly.Instance(compiled, {}).exports as KernelExports;
    // the screen reads 8 tokens per iteration, past the end of the last group: pad every array
    const cap = Math.ceil(size / 8) * 8 + 8;
    const z = 4 * cap;
    const pv = z + 8 * cap;
    const keep = pv + 8 * cap;
    const cand = keep + 4 * cap;
    const candU = cand + 4 * cap; // cap is a multiple of 8: 8-byte aligned
    this.at = { logits: 0, z, pv, keep, cand, candU };
    const bytes = candU + 8 * cap;
    const mem = this.k.memory;
    if (bytes > mem.buffer.byteLength) mem.grow(Math.ceil((bytes - mem.buffer.byteLength) / 65536));
    this.logits = new Float32Array(mem.buffer, 0, size);
    this.z = new Float64Array(mem.buffer, z, size);
    this.pv = new Float64Array(mem.buffer, pv, size);
    this.keep = new Uint32Array(mem.buffer, keep, size);
    this.cand = new Uint32Array(mem.buffer, cand, size);
    this.candU = new Float64Array(mem.buffer, candU, size);
  }

  /** z = logits / t over the whole vocabulary; returns max z. */
  scaleMax(t: number): number {
    return this.k.scale_max(this.at.logits, this.at.z, this.size, t);
  }

  /** Keeps every token: keep = 0..size-1, pv = exp(z - max); returns the sum of pv. */
  expAll(max: number): number {
    return this.k.exp_all(this.at.z, this.at.pv, this.at.keep, this.size, max);
  }

  /**
   * Writes to cand, ascending, every i < n with NOT (1 - U > bound * pv[i]), U the uniform of
   * counter (c0, keep[i]) under key (k0, k1) with parity word k2, and their U to candU (the same
   * float64 as threefry.ts's scalar uniform); returns how many.
   */
  screen(n: number, c0: number, k0: number, k1: number, k2: number, bound: number): number {
    return this.k.screen(this.at.keep, this.at.pv, this.at.cand, this.at.candU, n, c0, k0, k1, k2, bound);
  }
}
