/**
 * Model drafters: a cheaper copy of the policy (by default its 8-bit weight quantisation, see
 * python/specactor/models/quantize.py) decodes up to `maxDepth` tokens per request, sampling with the
 * request's own seeded noise and parameters: Gumbel coupling, so where the drafter's distribution is
 * close to the verifier's, its sample is the verifier's sample (acceptance >= (1 - TV) / (1 + TV) per
 * token; Daliri et al. 2024).
 *
 * Two drafters, one per way of running the drafter engine, share this file's parts (`makeModelDrafter`
 * picks one): `CoupledModelDrafter` (model-coupled.ts) takes turns with the verifier, drafting each
 * request's chain at every verify step; `DecoupledModelDrafter` (model-decoupled.ts) runs ahead on an
 * engine of its own while the verifier runs. Both read the chance that the verifier accepts a drafted
 * token from an `AcceptanceTable` (acceptance-table.ts), which drafters may share (a new drafter per
 * epoch of a rollout given the last one's table keeps what it learnt).
 *
 * The drafter engine keeps its own KV per request. Before drafting it is rolled back to the longest
 * prefix it shares with the verified sequence (its rejected drafts are dropped) and fed the rest, so a
 * request that skipped drafting for a while catches up in one step (`rollBack`).
 *
 * How long a chain runs. Let p_i be the drafter's probability of the token it drew at depth i (under
 * the request's temperature and top-k/top-p), and a_i = A[bin(p_i)] the acceptance table's estimate
 * of the chance that the verifier accepts that token, once it reached it.
 *
 * reach_d = a_1 ... a_d is the chance that the verifier walks to depth d. In units of one verifier
 * step, a drafted token costs c (one drafter step: each drafter says what it costs the verifier) plus
 * v (its row in the verify pass, the request's `rowPrice` or `nodeCost`); a step that drafted d tokens
 * is expected to emit E_d = 1 + reach_1 + ... + reach_d tokens in T_d = 1 + d (c + v). Tokens per
 * unit of time, E_d / T_d, grows with the next token while
 *
 *     reach_{d+1} >= (E_d / T_d) (c + v)
 *
 * and, as reach falls with depth, the first token that fails ends the chain (the greedy stop is the
 * best chain length; `ModelDrafterBase.bar`).
 *
 * v depends on the batch: under `--mode specactor` the policy quotes it from its measured cost model
 * as `DraftRequest.rowPrice` (about 0.05 at batch 1 on this CPU, 0.5 at batch 64); without the policy
 * it is `nodeCost` (0.05, the batch-1 figure, docs/ENGINE.md).
 */
import type { Engine } from "../engine/engine";
import type { DraftRequest } from "./drafter";
import { AcceptanceTable } from "./acceptance-table";

export interface ModelDrafterOptions {
  /** Least estimated chance that the verifier reaches a drafted token. */
  minReach: number;
  /** Estimate acceptance from the measured table and weigh it against the cost (off: raw confidence, `minReach` only). */
  costAware: boolean;
  /** A drafted token's row in the verify pass, in verifier steps (v above). */
  nodeCost: number;
  /** A request that is not worth drafting still drafts one token every this many of its steps. */
  probeEvery: number;
  /** One drafter step over one verifier step, if known (timed here when not given). */
  cost?: number;
}

export const MODEL_DRAFTER_DEFAULTS: Readonly<ModelDrafterOptions> = { minReach: 0.05, costAware: true, nodeCost: 0.05, probeEvery: 8 };

/** Weight of the timing averages' newest sample. */
const TIMING_EMA = 0.1;

/**
 * What both model drafters share: the options and acceptance table, the confidences of the
 * proposals until the verifier checks them, the verifier's step time, the stop rule's bar and KV
 * rollback on the drafter engine. (The factory, `makeModelDrafter`, lives with the drafter registry,
 * so this module does not import its subclasses.)
 */
export abstract class ModelDrafterBase {
  readonly opts: ModelDrafterOptions;
  /** The drafter's probabilities of the tokens it last proposed, per request (for the acceptance table). */
  readonly proposed = new Map<number, number[]>();
  /** The verifier's step: the time between two `propose` calls, averaged. */
  verifyStepMs = 0;
  /** A drafter step past the first of a chain, averaged. */
  draftStepMs = 0;
  /** c for the last drafting decision, where the drafter decides it (see `cost`). */
  lastCost = 1;
  private lastProposeEnd = 0;

  constructor(
    readonly engine: Engine,
    opts: Partial<ModelDrafterOptions> = {},
    readonly table: AcceptanceTable = new AcceptanceTable(),
  ) {
    this.opts = { ...MODEL_DRAFTER_DEFAULTS, ...opts };
  }

  /** a = A[bin(p)]: the estimated chance that the verifier accepts a drafted token of confidence p (p itself when costAware is off). */
  acceptance(p: number, typical = this.table.typical): number {
    if (!this.opts.costAware) return p;
    return this.table.acceptance(p, typical);
  }

  /** Accepted over tried drafted tokens, in the window. */
  get measuredAcceptance(): number {
    return this.table.measured;
  }

  /** abar when costAware, else 1 (a sure token: only `minReach` stops a chain). */
  get typical(): number {
    return this.opts.costAware ? this.table.typical : 1;
  }

  /** c for the last drafting decision (0 when costAware is off). */
  get cost(): number {
    if (!this.opts.costAware) return 0;
    return this.opts.cost ?? this.lastCost;
  }

  metrics(): Record<string, number> {
    const round = (x: number) => Math.round(x * 1e4) / 1e4;
    return { acceptance: round(this.table.measured), cost: round(this.cost) };
  }

  /** Call at the start of `propose`: the time since the last one ended is a verifier step. */
  proposeBegins(): void {
    const start = performance.now();
    // a gap far above the average is idle time (a server between requests), not a verifier step
    if (this.lastProposeEnd > 0) this.verifyStepMs = ema(this.verifyStepMs, Math.min(start - this.lastProposeEnd, 4 * this.verifyStepMs || Infinity));
  }

  /** Call at the end of `propose` (also when it throws). */
  proposeEnds(): void {
    this.lastProposeEnd = performance.now();
  }

  /** v: the row price the policy quotes for this step, else `nodeCost`. */
  rowPrice(requests: readonly DraftRequest[]): number {
    return requests[0]?.rowPrice ?? this.opts.nodeCost;
  }

  /** The least reach the next token of a chain needs: (E_d / T_d) (c + v) for d drafted tokens, at least minReach. */
  bar(expected: number, drafted: number, tokenCost: number): number {
    return Math.max(this.opts.minReach, (expected / (1 + drafted * tokenCost)) * tokenCost);
  }

  /** Truncates sequence `id`'s KV to the prefix `known` shares with `truth`; returns the tokens of `truth` to feed (at least one). */
  rollBack(id: number, known: readonly number[], truth: readonly number[]): number[] {
    const cached = this.engine.cachedLength(id);
    let common = 0;
    while (common < cached && common < truth.length && known[common] === truth[common]) common++;
    common = Math.min(common, truth.length - 1); // the step must append at least one token
    if (cached > common) this.engine.truncate(id, common);
    return truth.slice(common);
  }

  /** The verifier walked `accepted` of the last proposal: tokens 1..accepted+1 were tried (of the `verified` sent). */
  protected recordOutcome(id: number, accepted: number, verified?: number): void {
    const conf = this.proposed.get(id);
    if (!conf) return;
    this.proposed.delete(id);
    this.table.record(conf, accepted, verified);
  }
}

/** Whether `known` starts with the request's verified sequence (prompt and output). */
export function onBranch(known: readonly number[], r: DraftRequest): boolean {
  const p = r.promptIds.length;
  if (known.length < p + r.output.length) return false;
  for (let i = r.output.length - 1; i >= 0; i--) if (known[p + i] !== r.output[i]) return false;
  for (let i = 0; i < p; i++) if (known[i] !== r.promptIds[i]) return false;
  return true;
}

/** An exponential moving average's next value (the first sample as it is). */
export function ema(average: number, sample: number): number {
  return average === 0 ? sample : average + TIMING_EMA * (sample - average);
}
