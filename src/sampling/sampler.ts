/**
 * The seeded sampling rule (docs/SAMPLING.md), TypeScript side; its Python twin is
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
 * Top-p's mass comparisons use probabilities as exp(z - max) / sum in float64; a token sitting exactly
 * on the P boundary may resolve differently from Python's (which sums pairwise), a measure-zero case.
 */
import { VocabKernel } from "./kernel";
import { DOMAIN_SAMPLE, MAX_SEED, bits53, keyParity, seedKey } from "./threefry";

export interface SamplingParams {
  temperature: number;
  topP: number;
  /** -1 or 0 disables top-k (0 as in vLLM). */
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
    throw new RangeError(`top-k must be an integer >= -1 (-1 or 0 disables it), got ${p.topK}`);
  }
  return p;
}

/** G(seed, position, token) = -log(-log U): the Gumbel noise the sampler adds to z (for drafters). */
export function gumbel(seed: number, position: number, token: number): number {
  const [k0, k1] = seedKey(seed, DOMAIN_SAMPLE);
  return -Math.log(-Math.log((bits53(position, token, k0, k1) + 0.5) / MAX_SEED));
}

export interface Sample {
  token: number;
  logprob: number;
}

/**
 * Reusable per-vocabulary scratch space, so sampling a row allocates nothing.
 *
 * Speed (the vocabulary loops are the sampler's whole cost): with E_v = -log U_v, the winner
 * argmax z_v - log E_v is argmin E_v / p_v for p_v = exp(z_v - max z). Since E_v >= 1 - U_v, a token
 * with (1 - U_v) / p_v above the best ratio found so far cannot win, and needs no logarithm; the
 * highest-probability token is scored first so the bound bites at once. The pruning margin (1e-6
 * relative) is far above float64 rounding, so survivors alone decide, by the exact canonical score
 * z_v - log(-log U_v): the same float64 expression as the Python twin evaluates for every token.
 *
 * The loops over every kept token (scaling, exp, and Threefry with the screen above against the
 * first token's bound) run in a WebAssembly SIMD kernel (scripts/sampler-kernel.js); it returns the
 * survivors in ascending order, which are then scored here with the bound tightening as it goes.
 * Since the bound only tightens, the survivors of the first bound include every token the full scan
 * would score, so the winner is the full scan's.
 */
export class Sampler {
  private readonly k: VocabKernel;
  private readonly heap: Float64Array;

  constructor(readonly vocabSize: number) {
    this.k = new VocabKernel(vocabSize);
    this.heap = new Float64Array(vocabSize);
  }

  /** The token at absolute `position` from the logits computed at position - 1. */
  sample(logits: Float32Array, p: SamplingParams, seed: number, position: number): Sample {
    if (logits.length !== this.vocabSize) throw new RangeError(`expected ${this.vocabSize} logits, got ${logits.length}`);
    if (p.temperature === 0) return greedy(logits);
    const { n, lse } = this.process(logits, p);
    const { z, keep, pv, cand, candU } = this.k;
    const [k0, k1] = seedKey(seed, DOMAIN_SAMPLE);
    // the most likely kept token first: its ratio bounds everything else
    let first = 0;
    for (let i = 1; i < n; i++) if (pv[i] > pv[first]) first = i;
    let bestId = keep[first];
    const bestE = -Math.log((bits53(position, bestId, k0, k1) + 0.5) / MAX_SEED);
    let bestScore = z[bestId] - Math.log(bestE);
    let bound = (bestE / pv[first]) * (1 + 1e-6);
    const m = this.k.screen(n, position, k0, k1, keyParity(k0, k1), bound);
    for (let j = 0; j < m; j++) {
      const i = cand[j];
      const u = candU[j];
      if (1 - u > bound * pv[i] || i === first) continue;
      const v = keep[i];
      const e = -Math.log(u);
      const score = z[v] - Math.log(e);
      if (score > bestScore || (score === bestScore && v < bestId)) {
        bestScore = score;
        bestId = v;
        bound = (e / pv[i]) * (1 + 1e-6);
      }
    }
    return { token: bestId, logprob: z[bestId] - lse };
  }

  /** log p~ over the vocabulary (-Infinity for removed tokens); for tests and inspection. */
  processedLogprobs(logits: Float32Array, p: SamplingParams): Float64Array {
    const out = new Float64Array(this.vocabSize).fill(-Infinity);
    if (p.temperature === 0) {
      out[greedy(logits).token] = 0;
      return out;
    }
    const { n, lse } = this.process(logits, p);
    for (let i = 0; i < n; i++) out[this.k.keep[i]] = this.k.z[this.k.keep[i]] - lse;
    return out;
  }

  /**
   * Scales into z; fills keep[0..n) with the kept ids (ascending) and pv[0..n) with their
   * exp(z - max z); returns n and the kept tokens' log-normaliser.
   */
  private process(logits: Float32Array, p: SamplingParams): { n: number; lse: number } {
    const V = this.vocabSize;
    const { z, keep, pv } = this.k;
    this.k.logits.set(logits);
    const max = this.k.scaleMax(p.temperature);
    let n = 0;
    let sum = 0;
    if (p.topK > 0 && p.topK < V) {
      const threshold = this.kthLargest(p.topK);
      for (let v = 0; v < V; v++) {
        if (z[v] >= threshold) {
          const e = Math.exp(z[v] - max);
          keep[n] = v;
          pv[n++] = e;
          sum += e;
        }
      }
    } else {
      sum = this.k.expAll(max);
      n = V;
    }
    if (p.topP < 1) {
      n = this.keepTopP(p.topP, n, sum);
      sum = 0;
      for (let i = 0; i < n; i++) sum += pv[i];
    }
    return { n, lse: max + Math.log(sum) };
  }

  /**
   * Top-p over keep[0..n): sorted by probability descending (ties by id), a token stays while the
   * mass before it is < P. Only tokens above a probability floor whose mass already reaches P need
   * sorting: every token below it has at least that mass before it, so it is dropped anyway.
   */
  private keepTopP(topP: number, n: number, sum: number): number {
    const { keep, pv } = this.k;
    let cand: number[] = [];
    for (const margin of [1e-3, 1e-5, 1e-7, 0]) {
      const floor = margin * sum;
      cand = [];
      let mass = 0;
      for (let i = 0; i < n; i++) {
        if (pv[i] >= floor) {
          cand.push(i);
          mass += pv[i];
        }
      }
      if (mass >= topP * sum || margin === 0) break;
    }
    cand.sort((a, b) => pv[b] - pv[a] || keep[a] - keep[b]);
    let before = 0;
    let m = 0;
    for (const i of cand) {
      if (before >= topP) break;
      before += pv[i] / sum;
      m++;
    }
    const chosen = cand.slice(0, m).sort((a, b) => a - b);
    for (let j = 0; j < m; j++) {
      keep[j] = keep[chosen[j]];
      pv[j] = pv[chosen[j]];
    }
    return m;
  }

  /** The k-th largest value of z, by a min-heap of the k largest seen. */
  private kthLargest(k: number): number {
    const { z } = this.k;
    const heap = this.heap;
    for (let i = 0; i < k; i++) heap[i] = z[i];
    for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(heap, k, i);
    for (let v = k; v < z.length; v++) {
      if (z[v] > heap[0]) {
        heap[0] = z[v];
        siftDown(heap, k, 0);
      }
    }
    return heap[0];
  }
}

function siftDown(h: Float64Array, n: number, i: number): void {
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < n && h[l] < h[m]) m = l;
    if (r < n && h[r] < h[m]) m = r;
    if (m === i) return;
    const t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
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
