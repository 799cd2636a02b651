/**
 * How much of the candidate drafts a step verifies: the policy's one decision, made for the whole
 * batch at once. Every selector gets each request's candidate nodes in priority order (calibrated
 * chance q descending, a parent always before its children) and returns how many of them each
 * request verifies. The default, `cost`, decides from the measured cost model; the others are the
 * benchmark's ablations.
 *
 * `cost`. The engines pad a step to its longest sequence, so what a step buys is a level: k more
 * rows for every sequence (N = N0 + k). With E(k) = sum_r (1 + q_r1 + ... + q_rn_r(k)) expected
 * emitted tokens, V(k) the same with each request weighted by w_r (its predicted remaining length
 * over the batch mean: makespan, not throughput) and T(k) the predicted step time, it takes
 *
 *     k* = argmax_k V(k) / T(k)   subject to   E(k) / T(k) >= (1 + minGain) E(0) / T(0)
 *
 * so a step is never expected to emit tokens more slowly than plain decoding, and it drafts only for a
 * predicted gain of at least `minGain` (the cost model's own error on a shared machine). Within the
 * level, a node still costs its LM-head row (h): it is kept while w q >= (V / T) h, the marginal-rate
 * rule (a node must earn at least the step's current rate). On a compute-bound step a level costs
 * nearly a plain step and only near-certain nodes pay; as the batch drains, levels get cheap and
 * drafts grow deep and wide, from the same rule.
 */
import { StepCostModel, type StepShape } from "./cost-model";

export interface Candidate {
  /** Calibrated chance that the walk reaches and accepts each node, in priority order. */
  q: number[];
  /** Tokens the request appends this step (1 when decoding, the prompt at prefill). */
  append: number;
  /** Makespan weight (mean 1 over the batch). */
  weight: number;
  /** Most nodes this request may verify. */
  maxNodes: number;
}

export interface SelectionContext {
  cost: StepCostModel;
  /** The batch's longest context (positions), for the attention term. */
  context: number;
  minGain: number;
  /** fixed and batch-table: the draft length they apply. */
  draftLen: number;
}

export interface Selection {
  /** Nodes verified per request. */
  counts: number[];
  /** The level chosen (extra padded rows per sequence). */
  level: number;
  predictedMs: number;
  /** Predicted emitted tokens over plain's predicted rate (1 = as plain). */
  predictedGain: number;
  /** Run the drafted requests and the others as two engine steps (see CostSelector.bestSplit). */
  split?: boolean;
}

export interface Selector {
  readonly name: string;
  select(cands: readonly Candidate[], ctx: SelectionContext): Selection;
}

function shape(cands: readonly Candidate[], counts: readonly number[], context: number): StepShape {
  let N = 1;
  let nodes = 0;
  cands.forEach((c, i) => {
    N = Math.max(N, c.append + counts[i]);
    nodes += counts[i];
  });
  return { sequences: cands.length, rowsPerSequence: N, sampledRows: cands.length + nodes, context: context + N };
}

/** Nodes each request verifies at level k: its free padding plus k, within its candidates and budget. */
function countsAt(cands: readonly Candidate[], k: number): number[] {
  const N0 = Math.max(1, ...cands.map((c) => c.append));
  return cands.map((c) => Math.max(0, Math.min(c.q.length, c.maxNodes, N0 + k - c.append)));
}

function expected(cands: readonly Candidate[], counts: readonly number[], weighted: boolean): number {
  let e = 0;
  cands.forEach((c, i) => {
    let v = 1;
    for (let j = 0; j < counts[i]; j++) v += c.q[j];
    e += weighted ? c.weight * v : v;
  });
  return e;
}

/** The prediction for a chosen count vector. */
function selection(cands: readonly Candidate[], ctx: SelectionContext, counts: number[], level: number): Selection {
  const T = ctx.cost.predict(shape(cands, counts, ctx.context));
  const zero = cands.map(() => 0);
  const T0 = ctx.cost.predict(shape(cands, zero, ctx.context));
  const gain = T > 0 && T0 > 0 ? expected(cands, counts, false) / T / (cands.length / T0) : 1;
  return { counts, level, predictedMs: T, predictedGain: gain };
}

class CostSelector implements Selector {
  readonly name = "cost";

  select(cands: readonly Candidate[], ctx: SelectionContext): Selection {
    const zero = cands.map(() => 0);
    if (!ctx.cost.ready || cands.length === 0) return selection(cands, ctx, zero, 0);
    const maxLevel = Math.max(0, ...cands.map((c) => Math.min(c.q.length, c.maxNodes)));
    const T0 = ctx.cost.predict(shape(cands, zero, ctx.context));
    const plainRate = cands.length / T0;
    const decode = cands.every((c) => c.append === 1);
    let best = { level: 0, counts: zero, rate: expected(cands, zero, true) / T0, T: T0, split: false };
    for (let k = 1; k <= maxLevel; k++) {
      const counts = countsAt(cands, k);
      const T = ctx.cost.predict(shape(cands, counts, ctx.context));
      if (expected(cands, counts, false) / T >= (1 + ctx.minGain) * plainRate) {
        const rate = expected(cands, counts, true) / T;
        if (rate > best.rate) best = { level: k, counts, rate, T, split: false };
      }
      if (decode && cands.length > 1) {
        const s = this.bestSplit(cands, ctx, counts, plainRate);
        if (s && s.rate > best.rate) best = { level: k, ...s, split: true };
      }
    }
    // within the level a node still costs its LM-head row: keep it while it earns the step's rate
    const h = ctx.cost.lmHeadMs;
    if (h > 0 && best.level > 0) {
      best.counts = best.counts.map((n, i) => {
        let m = n;
        while (m > 0 && cands[i].weight * cands[i].q[m - 1] < best.rate * h) m--;
        return m;
      });
    }
    const sel = selection(cands, ctx, best.counts, best.level);
    if (!best.split || best.counts.every((n) => n === 0)) return sel;
    const T = splitTime(cands, ctx, best.counts);
    return { ...sel, split: true, predictedMs: T, predictedGain: expected(cands, best.counts, false) / T / plainRate };
  }

  /**
   * The padded step's alternative: the m requests whose level-k drafts are worth most verify in a
   * step of their own, the rest decode in a plain step beside it, so the others' padding rows are not
   * paid for. Two engine steps cost their fixed parts twice: the cost model says when it is worth it.
   */
  private bestSplit(cands: readonly Candidate[], ctx: SelectionContext, level: readonly number[], plainRate: number) {
    const value = cands.map((c, i) => {
      let v = 0;
      for (let j = 0; j < level[i]; j++) v += c.q[j];
      return c.weight * v;
    });
    const order = cands.map((_, i) => i).sort((a, b) => value[b] - value[a]);
    const B = cands.length;
    let best: { counts: number[]; rate: number; T: number } | undefined;
    // decode steps: one row per sequence plus its nodes, so both groups' shapes grow by running sums
    let rows = 1;
    let nodes = 0;
    let weighted = 0;
    let raw = B;
    for (const c of cands) weighted += c.weight;
    for (let m = 1; m < B; m++) {
      const i = order[m - 1];
      if (value[i] <= 0) break;
      rows = Math.max(rows, 1 + level[i]);
      nodes += level[i];
      weighted += value[i];
      for (let j = 0; j < level[i]; j++) raw += cands[i].q[j];
      const T =
        ctx.cost.predict({ sequences: m, rowsPerSequence: rows, sampledRows: m + nodes, context: ctx.context + rows }) +
        ctx.cost.predict({ sequences: B - m, rowsPerSequence: 1, sampledRows: B - m, context: ctx.context + 1 });
      if (raw / T < (1 + ctx.minGain) * plainRate) continue;
      if (!best || weighted / T > best.rate) best = { counts: order.slice(0, m), rate: weighted / T, T };
    }
    if (!best) return undefined;
    const counts = cands.map(() => 0);
    for (const i of best.counts) counts[i] = level[i];
    return { counts, rate: best.rate, T: best.T };
  }
}

/** Predicted time of a step split into the drafted requests' step and the others' plain step. */
function splitTime(cands: readonly Candidate[], ctx: SelectionContext, counts: readonly number[]): number {
  const drafted = cands.filter((_, i) => counts[i] > 0);
  const plain = cands.filter((_, i) => counts[i] === 0);
  const dc = counts.filter((n) => n > 0);
  return ctx.cost.predict(shape(drafted, dc, ctx.context)) + (plain.length > 0 ? ctx.cost.predict(shape(plain, plain.map(() => 0), ctx.context)) : 0);
}

/** Ablation: the draft rule of today's vanilla modes, a verify row priced at a constant 0.05 of a step. */
class ConstantPriceSelector implements Selector {
  readonly name = "const-price";
  static readonly ROW_PRICE = 0.05;

  select(cands: readonly Candidate[], ctx: SelectionContext): Selection {
    // per request, the longest prefix whose every node earns the request's rate at that price
    const counts = cands.map((c) => {
      let e = 1;
      let m = 0;
      while (m < Math.min(c.q.length, c.maxNodes) && c.q[m] >= (e / (1 + m * ConstantPriceSelector.ROW_PRICE)) * ConstantPriceSelector.ROW_PRICE) e += c.q[m++];
      return m;
    });
    return selection(cands, ctx, counts, Math.max(0, ...counts));
  }
}

/** Ablation: every request verifies its best `draftLen` nodes, whatever they cost. */
class FixedLengthSelector implements Selector {
  readonly name = "fixed";

  select(cands: readonly Candidate[], ctx: SelectionContext): Selection {
    const counts = cands.map((c) => Math.min(c.q.length, c.maxNodes, ctx.draftLen));
    return selection(cands, ctx, counts, Math.max(0, ...counts));
  }
}

/**
 * Ablation: the draft length from the batch size, in the manner of vLLM's
 * `num_speculative_tokens_per_batch_size` (a table fixed in advance, not measured).
 */
export class BatchTableSelector implements Selector {
  readonly name = "batch-table";
  /** [least batch size, draft length]: batch 1-4 draftLen, 5-16 half, 17-32 a quarter, 33-64 one, above none. */
  static table(draftLen: number): [number, number][] {
    return [
      [1, draftLen],
      [5, Math.max(1, Math.floor(draftLen / 2))],
      [17, Math.max(1, Math.floor(draftLen / 4))],
      [33, 1],
      [65, 0],
    ];
  }

  select(cands: readonly Candidate[], ctx: SelectionContext): Selection {
    let K = 0;
    for (const [least, k] of BatchTableSelector.table(ctx.draftLen)) if (cands.length >= least) K = k;
    const counts = cands.map((c) => Math.min(c.q.length, c.maxNodes, K));
    return selection(cands, ctx, counts, K);
  }
}

export const SELECTORS: Record<string, () => Selector> = {
  cost: () => new CostSelector(),
  "const-price": () => new ConstantPriceSelector(),
  fixed: () => new FixedLengthSelector(),
  "batch-table": () => new BatchTableSelector(),
};

export function makeSelector(name: string): Selector {
  const make = SELECTORS[name];
  if (!make) throw new Error(`unknown policy '${name}' (known: ${Object.keys(SELECTORS).join(", ")})`);
  return make();
}
