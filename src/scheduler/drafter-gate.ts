/**
 * Whether each drafter runs this step: the marginal-rate rule applied to the drafter itself. A
 * drafter's proposing time is spent before the verify step, so it must buy at least what plain
 * decoding would have produced in that time:
 *
 *     credit_d(B) >= (B / T_plain(B)) * ms_d(B)
 *
 * with ms_d(B) its measured time and credit_d(B) the accepted tokens credited to it (an accepted node
 * that several drafters proposed is shared among them), both sums over its recent calls (decayed by
 * DECAY per call) per batch-size bucket (powers of two): sums, because a drafter's cost comes in
 * bursts (the model drafter's catch-up after a pause costs a prefill; most of its calls cost nothing). A bucket never measured runs (that is how it gets
 * measured); a drafter that does not pay still runs from an allowance of EXPLORE_SHARE of the plain
 * step time, so a change (a drifting policy, a request that starts to copy) is noticed. Cheap drafters
 * (suffix, n-gram: well under a millisecond per call) pass on almost any credit; the model drafter's
 * own steps must be paid for by its accepted tokens, measured rather than assumed.
 */

const BUCKETS = 16;
const DECAY = 0.97;
const EXPLORE_SHARE = 0.02;

interface Bucket {
  ms: number;
  credit: number;
  calls: number;
}

export class DrafterGate {
  private readonly buckets: Bucket[][];
  private readonly allowance: number[];
  /** The open call of each drafter (this step's): its bucket, time and credit so far. */
  private readonly open: ({ bucket: number; ms: number; credit: number } | undefined)[];

  constructor(drafters: number) {
    this.buckets = Array.from({ length: drafters }, () => Array.from({ length: BUCKETS }, () => ({ ms: 0, credit: 0, calls: 0 })));
    this.allowance = new Array<number>(drafters).fill(0);
    this.open = new Array(drafters).fill(undefined);
  }

  private static bucket(batch: number): number {
    return Math.min(BUCKETS - 1, Math.floor(Math.log2(Math.max(1, batch))));
  }

  /** Closes the previous step's calls (their credit is complete once the next step proposes). */
  private close(d: number): void {
    const c = this.open[d];
    if (!c) return;
    const b = this.buckets[d][c.bucket];
    b.ms = b.ms * DECAY + c.ms;
    b.credit = b.credit * DECAY + c.credit;
    b.calls++;
    this.open[d] = undefined;
  }

  /** Whether drafter d runs for a step of `batch` requests whose plain step is predicted at `plainMs`. */
  shouldRun(d: number, batch: number, plainMs: number): boolean {
    this.close(d);
    const b = this.buckets[d][DrafterGate.bucket(batch)];
    if (b.calls === 0 || !(plainMs > 0)) return true;
    if (b.credit >= (batch / plainMs) * b.ms) return true;
    // exploring costs what a call has cost on average
    const perCall = b.ms / Math.min(b.calls, 1 / (1 - DECAY));
    this.allowance[d] = Math.min(this.allowance[d] + EXPLORE_SHARE * plainMs, 2 * plainMs + perCall);
    if (this.allowance[d] < perCall) return false;
    this.allowance[d] -= perCall;
    return true;
  }

  /** Drafter d ran this step, for `batch` requests, taking `ms`. */
  ran(d: number, batch: number, ms: number): void {
    this.open[d] = { bucket: DrafterGate.bucket(batch), ms, credit: 0 };
  }

  /** Accepted tokens credited to drafter d for the step it ran. */
  credit(d: number, tokens: number): void {
    const c = this.open[d];
    if (c) c.credit += tokens;
  }

  /** Per drafter and batch bucket: the decayed sums of time and credit, and the calls (for reports). */
  table(): { batch: number; ms: number; credit: number; calls: number }[][] {
    return this.buckets.map((bs) => bs.map((b, k) => ({ batch: 2 ** k, ms: round(b.ms), credit: round(b.credit), calls: b.calls })).filter((x) => x.calls > 0));
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
