/**
 * Turning drafters' scores into probabilities the policy can price, and learning per request which
 * drafter is winning.
 *
 * A drafter's score for a node is its own estimate of the chance that the verifier walks to the node
 * and accepts it. Scores are biased in drafter-specific ways (a suffix trie's count shares, an n-gram
 * match that has no confidence at all), so each drafter gets a calibration table over score bins,
 * counted from every verified node's outcome (accepted on the walk's path, or not):
 *
 *     q_cal(s) = (hits_b + M s) / (tried_b + M),   b = bin(s)
 *
 * (a bin never tried answers the raw score; M = PRIOR_WEIGHT). Counts decay past WINDOW outcomes so the
 * table follows a drifting policy. Per request and drafter, a factor rho = (H + 1) / (Q + 1) over the
 * request's recent outcomes (H hits, Q the calibrated chances of the same nodes, both decayed by
 * REQUEST_DECAY per step) says whether this drafter does better or worse on this request than its
 * table expects: q = min(Q_MAX, q_cal rho). This is how Fastest-of-N's budget flows to the method
 * that wins on each request.
 */

const BINS = 10;
const PRIOR_WEIGHT = 4;
const WINDOW = 4000;
const REQUEST_DECAY = 0.85;
/** No node is ever certain: the walk can always diverge. */
export const Q_MAX = 0.98;

export class DrafterCalibration {
  private readonly tried = new Float64Array(BINS);
  private readonly hits = new Float64Array(BINS);

  constructor(readonly name: string) {}

  calibrated(score: number): number {
    const s = clamp01(Number.isFinite(score) ? score : 0.5);
    const b = Math.min(BINS - 1, Math.floor(s * BINS));
    return (this.hits[b] + PRIOR_WEIGHT * s) / (this.tried[b] + PRIOR_WEIGHT);
  }

  record(score: number, hit: boolean): void {
    const s = clamp01(Number.isFinite(score) ? score : 0.5);
    const b = Math.min(BINS - 1, Math.floor(s * BINS));
    this.tried[b] += 1;
    if (hit) this.hits[b] += 1;
    const total = this.tried.reduce((a, x) => a + x, 0);
    if (total > WINDOW) {
      const k = WINDOW / total;
      for (let i = 0; i < BINS; i++) {
        this.tried[i] *= k;
        this.hits[i] *= k;
      }
    }
  }

  /** Accepted over tried verified nodes in the window. */
  get acceptance(): number {
    const t = this.tried.reduce((a, x) => a + x, 0);
    return t > 0 ? this.hits.reduce((a, x) => a + x, 0) / t : 0;
  }

  get outcomes(): number {
    return this.tried.reduce((a, x) => a + x, 0);
  }
}

/** rho per (request, drafter): how this drafter does on this request against its table. */
export class RequestFactors {
  private readonly state = new Map<number, { hits: Float64Array; expected: Float64Array }>();

  constructor(private readonly drafters: number) {}

  factor(request: number, drafter: number): number {
    const s = this.state.get(request);
    return s ? (s.hits[drafter] + 1) / (s.expected[drafter] + 1) : 1;
  }

  /** One step's outcomes for `request`: per drafter, hits and summed calibrated chances. */
  record(request: number, hits: Float64Array, expected: Float64Array): void {
    let s = this.state.get(request);
    if (!s) this.state.set(request, (s = { hits: new Float64Array(this.drafters), expected: new Float64Array(this.drafters) }));
    for (let d = 0; d < this.drafters; d++) {
      if (expected[d] === 0 && hits[d] === 0) continue; // this drafter had nothing verified: no news
      s.hits[d] = s.hits[d] * REQUEST_DECAY + hits[d];
      s.expected[d] = s.expected[d] * REQUEST_DECAY + expected[d];
    }
  }

  forget(request: number): void {
    this.state.delete(request);
  }
}

function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}
