/**
 * The seeded sampling rule (DESIGN.md section 2), TypeScript side; its Python twin is
 * `python/specactor/sampling.py` and `bridge/vectors/sampler.json` ties the two.
 *
 *     x_t = argmax_{v kept} ( z_v + G(seed, t, v) ),   z = logits / T,   G = -log(-log U(seed, t, v))
 *
 * Processing, in float64, in this order: temperature; top-k keeps every token whose z reaches the
 * k-th largest value (ties kept); top-p sorts the top-k-renormalised probabilities descending (ties
 * by token id) and keeps a token while the mass before it is < P. The argmax of z + G over kept
 * tokens equals that of log p~ + G (the normaliser is a shared constant), so the normaliser is only
 * computed for the returned log-prob. Temperature 0 is argmax with lowest-id ties, and its log-prob
 * is of the unprocessed distribution (the processed one is one-hot).
 *
 * Noise is drawn only for kept tokens: with top-k or top-p that is a handful, not the vocabulary.
 */
import { DOMAIN_SAMPLE, MAX_SEED, bits53, seedKey } from "./threefry";

export interface SamplingParams {
  temperature: number;
  topP: number;
  /** -1 or 0 disables top-k. */
  topK: number;
}

export const DEFAULT_PARAMS: SamplingParams = { temperature: 1, topP: 1, topK: -1 };

/** Throws a one-line error naming the bad parameter. */
export function validateParams(p: SamplingParams): SamplingParams {
  if (typeof p.temperature !== "number" || !Number.isFinite(p.temperature) || p.temperature < 0) {
    throw new RangeError(`temperature must be a finite number >= 0, got ${p.temperature}`);
  }
  if (typeof p.topP !== "number" || !(p.topP > 0 && p.topP <= 1)) {
    throw new RangeError(`top-p must be in (0, 1], got ${p.topP}`);
  }
  if (!Number.isInteger(p.topK) || p.topK < -1) {
    throw new RangeError(`top-k must be an integer >= -1 (-1 disables it), got ${p.topK}`);
  }
  return p;
}

export interface Sample {
  token: number;
  logprob: number;
}

/** Reusable per-vocabulary scratch space, so sampling a row allocates nothing. */
export class Sampler {
  private z: Float64Array;
  private keep: Uint32Array;
  private sortKeys: Float64Array;

  constructor(readonly vocabSize: number) {
    this.z = new Float64Array(vocabSize);
    this.keep = new Uint32Array(vocabSize);
    this.sortKeys = new Float64Array(vocabSize);
  }

  /** The token at absolute `position` from the logits computed at position - 1. */
  sample(logits: Float32Array, p: SamplingParams, seed: number, position: number): Sample {
    if (p.temperature === 0) return greedy(logits);
    const { n: kept, lse } = this.process(logits, p);
    const z = this.z;
    const [k0, k1] = seedKey(seed, DOMAIN_SAMPLE);
    let best = -1;
    let bestScore = -Infinity;
    const keep = this.keep;
    for (let i = 0; i < kept; i++) {
      const v = keep[i];
      const u = (bits53(position, v, k0, k1) + 0.5) / MAX_SEED;
      const score = z[v] - Math.log(-Math.log(u));
      // kept ids ascend, so strict > keeps the lowest id on ties
      if (score > bestScore) {
        bestScore = score;
        best = v;
      }
    }
    return { token: best, logprob: z[best] - lse };
  }

  /** log p~ over the vocabulary (-Infinity for removed tokens); for tests and inspection. */
  processedLogprobs(logits: Float32Array, p: SamplingParams): Float64Array {
    const out = new Float64Array(this.vocabSize).fill(-Infinity);
    if (p.temperature === 0) {
      out[greedy(logits).token] = 0;
      return out;
    }
    const kept = this.process(logits, p);
    for (let i = 0; i < kept.n; i++) out[this.keep[i]] = this.z[this.keep[i]] - kept.lse;
    return out;
  }

  /** Scales into z and fills keep[0..n) with the kept ids; returns n and their log-normaliser. */
  private process(logits: Float32Array, p: SamplingParams): { n: number; lse: number } {
    const V = this.vocabSize;
    if (logits.length !== V) throw new RangeError(`expected ${V} logits, got ${logits.length}`);
    const z = this.z;
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      const x = logits[v] / p.temperature;
      z[v] = x;
      if (x > max) max = x;
    }
    let n = this.keptByTopK(p.topK, max);
    let lse = logSumExp(z, this.keep, n);
    if (p.topP < 1) {
      n = this.keptByTopP(p.topP, n, lse);
      lse = logSumExp(z, this.keep, n);
    }
    return { n, lse };
  }

  /** Fills keep[0..n) with the kept ids in ascending order and returns n. */
  private keptByTopK(topK: number, max: number): number {
    const V = this.vocabSize;
    const z = this.z;
    const keep = this.keep;
    let threshold = -Infinity;
    if (topK > 0 && topK < V) threshold = kthLargest(z, topK, max, this.sortKeys);
    let n = 0;
    for (let v = 0; v < V; v++) if (z[v] >= threshold) keep[n++] = v;
    return n;
  }

  /**
   * Top-p over keep[0..n). Only tokens above a threshold whose mass already reaches P need sorting:
   * every token below it has at least that mass before it, so it is dropped anyway.
   */
  private keptByTopP(topP: number, n: number, lse: number): number {
    const z = this.z;
    const keep = this.keep;
    let cand: number[] = [];
    for (const margin of [8, 16, 32, Infinity]) {
      const floor = lse - margin; // tokens with p >= exp(-margin)
      cand = [];
      let mass = 0;
      for (let i = 0; i < n; i++) {
        const v = keep[i];
        if (z[v] >= floor) {
          cand.push(v);
          mass += Math.exp(z[v] - lse);
        }
      }
      if (mass >= topP || margin === Infinity) break;
    }
    cand.sort((a, b) => z[b] - z[a] || a - b);
    let before = 0;
    let m = 0;
    for (const v of cand) {
      if (before >= topP) break;
      before += Math.exp(z[v] - lse);
      m++;
    }
    const chosen = cand.slice(0, m).sort((a, b) => a - b);
    for (let i = 0; i < m; i++) keep[i] = chosen[i];
    return m;
  }
}

function greedy(logits: Float32Array): Sample {
  let best = 0;
  for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
  let sum = 0;
  const max = logits[best];
  for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v] - max);
  return { token: best, logprob: -Math.log(sum) };
}

function logSumExp(z: Float64Array, ids: Uint32Array, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (z[ids[i]] > max) max = z[ids[i]];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(z[ids[i]] - max);
  return max + Math.log(sum);
}

/** The k-th largest value of z (1-based), by a partial sort of the values near the top. */
function kthLargest(z: Float64Array, k: number, max: number, scratch: Float64Array): number {
  for (const margin of [16, 64, Infinity]) {
    let n = 0;
    for (let v = 0; v < z.length; v++) if (z[v] >= max - margin) scratch[n++] = z[v];
    if (n >= k) {
      const top = scratch.subarray(0, n).sort();
      return top[n - k];
    }
  }
  throw new Error("unreachable: the whole vocabulary holds at least k values");
}
