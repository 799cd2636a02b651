/**
 * The model drafter's acceptance table: the chance that the verifier accepts a drafted token, once
 * it reached it, by the drafter's confidence in that token. Let p be the drafter's probability of the
 * token it drew (under the request's temperature and top-k/top-p); the table is counted over the last
 * ~2000 tried tokens (CALIBRATION_WINDOW):
 *
 *     a = A[bin(p)],   A[b] = (accepted_b + abar) / (tried_b + 1),   abar = (accepted + 1/2) / (tried + 1)
 *
 * five bins of p (BINS), each shrunk towards the rate over all of them, abar (so a bin that was never
 * tried starts at what the drafter typically achieves, and gets tried).
 *
 * Confidence predicts acceptance for a drafter that differs from the policy (EAGLE-2, Li et al. 2024),
 * and a truncated policy is often confidently wrong; but a drafter that agrees with the policy is
 * accepted whatever its confidence (a quantised policy drawing a 0.2-probability token with the
 * verifier's noise draws the verifier's token). The table learns either shape.
 *
 * A table is plain state and can be shared: across a rollout's epochs, a new drafter per epoch given
 * the last one's table keeps what it learnt. Whether a drafter reads it at all (`costAware`) is the
 * drafter's business.
 */

/** Acceptance counts are scaled down past this many tried tokens, so the table follows a drifting policy. */
export const CALIBRATION_WINDOW = 2000;
/** Confidence bins of the acceptance table: [0, 0.2), [0.2, 0.4), ... [0.8, 1]. */
export const BINS = 5;

export class AcceptanceTable {
  private readonly tried = new Float64Array(BINS);
  private readonly hits = new Float64Array(BINS);

  /** a = A[bin(p)]: the estimated chance that the verifier accepts a drafted token of confidence p. */
  acceptance(p: number, typical = this.typical): number {
    const b = binOf(p);
    return (this.hits[b] + typical) / (this.tried[b] + 1);
  }

  /** abar: the next drafted token's chance before its confidence is known, the rows weighted as tried (prior 1/2). */
  get typical(): number {
    return (sum(this.hits) + 0.5) / (sum(this.tried) + 1);
  }

  /** Accepted over tried drafted tokens, in the window (0 before any). */
  get measured(): number {
    const tried = sum(this.tried);
    return tried > 0 ? sum(this.hits) / tried : 0;
  }

  /**
   * The verifier walked `accepted` tokens of a proposal whose drafted tokens had these confidences:
   * tokens 1..accepted+1 were tried (of the `verified` it checked, where it checked only part).
   */
  record(confidences: readonly number[], accepted: number, verified?: number): void {
    const tried = Math.min(accepted + 1, verified ?? confidences.length, confidences.length);
    for (let i = 0; i < tried; i++) {
      const b = binOf(confidences[i]);
      this.tried[b] += 1;
      if (i < accepted) this.hits[b] += 1;
    }
    const total = sum(this.tried);
    if (total > CALIBRATION_WINDOW) {
      const s = CALIBRATION_WINDOW / total;
      for (let b = 0; b < BINS; b++) {
        this.tried[b] *= s;
        this.hits[b] *= s;
      }
    }
  }
}

/** The bin of confidence p. */
export function binOf(p: number): number {
  return Math.min(BINS - 1, Math.floor(p * BINS));
}

function sum(xs: Float64Array): number {
  return xs.reduce((a, b) => a + b, 0);
}
