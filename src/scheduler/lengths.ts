/**
 * Remaining-length predictions for makespan weighting. An RL rollout waits for its longest sample,
 * so a draft node on a request that will run long is worth more than one on a request about to stop.
 * A request's total length is predicted from the finished lengths of its group (GRPO siblings and
 * earlier epochs of the same prompt), conditioned on what it has already survived:
 *
 *     remaining(r) = mean{ L in group(r) : L > len(r) } - len(r)
 *
 * falling back to the same over every finished request, and, with nothing longer seen yet, to half of
 * its remaining budget (a request that outlives all its siblings is likely one of the long ones).
 */

/** Lengths kept per group and overall (the most recent). */
const PER_GROUP = 64;
const OVERALL = 512;

export class LengthPredictor {
  private readonly groups = new Map<string, number[]>();
  private readonly all: number[] = [];
  /** Groups remembered, least recently used evicted. */
  constructor(private readonly maxGroups = 100_000) {}

  record(group: string, length: number): void {
    let g = this.groups.get(group);
    if (g) this.groups.delete(group);
    else g = [];
    g.push(length);
    if (g.length > PER_GROUP) g.shift();
    this.groups.set(group, g);
    if (this.groups.size > this.maxGroups) this.groups.delete(this.groups.keys().next().value!);
    this.all.push(length);
    if (this.all.length > OVERALL) this.all.shift();
  }

  remaining(group: string, length: number, budget: number): number {
    const left = Math.max(1, budget - length);
    for (const pool of [this.groups.get(group), this.all]) {
      if (!pool) continue;
      let sum = 0;
      let n = 0;
      for (const L of pool) if (L > length) (sum += L), n++;
      if (n > 0) return Math.min(left, Math.max(1, sum / n - length));
    }
    return Math.max(1, left / 2);
  }
}
