/**
 * A model drafter: a smaller engine (the layer-truncated policy) decodes `maxDepth` tokens per
 * request, sampling with the request's own seeded noise and parameters: Gumbel coupling, so where the
 * drafter's distribution is close to the verifier's, its sample is the verifier's sample
 * (acceptance >= (1 - TV) / (1 + TV) per token; Daliri et al. 2024).
 *
 * The drafter engine keeps its own KV per request. Before drafting it is rolled back to the longest
 * prefix it shares with the verified sequence (its rejected drafts are dropped) and fed the rest, so a
 * request that skipped drafting for a while catches up in one step.
 *
 * How long a chain runs: a drafted token pays off when the chance that the verifier walks to it
 * exceeds what drafting it costs. Let p_i be the drafter's probability of the token it drew at depth i
 * (under the request's temperature and top-k/top-p). Draft confidence tracks acceptance (EAGLE-2, Li
 * et al. 2024) but need not equal it: a truncated policy is often confidently wrong. So the chance
 * that the verifier accepts token i, given it reached it, is estimated as
 *
 *     a_i = min(1, kappa * p_i),   kappa = (accepted + 1) / (sum of p over tried tokens + 1),
 *
 * counted over the drafter's recent proposals (a token is tried when the verifier reached its depth),
 * and the chance of reaching depth d is reach_d = a_1 ... a_d. The chain stops before a token with
 * reach_d < max(minReach, cost), where cost = (one drafter step) / (one verifier step), both timed
 * here (a drafter step past the first of a chain, which feeds one token per request; the verifier's
 * step is the time between two `propose` calls). When even a sure token
 * (p = 1) would not pay, min(1, kappa) < threshold, the request is not drafted at all, and the drafter
 * costs nothing; it still drafts one token every `probeEvery` of the request's steps so that kappa
 * follows the drafter if it starts to agree (the policy drifts between epochs).
 */
import type { Engine, SeqStep } from "../engine/engine";
import { chain, type DraftRequest, type Drafter } from "./drafter";
import type { Trie } from "../engine/trie";

export interface ModelDrafterOptions {
  /** Least estimated chance that the verifier reaches a drafted token (a floor under the measured cost). */
  minReach: number;
  /** Calibrate confidence by measured acceptance and weigh it against the measured cost (off: raw confidence, `minReach` only). */
  costAware: boolean;
  /** A request that is not worth drafting still drafts one token every this many of its steps. */
  probeEvery: number;
  /** One drafter step over one verifier step, if known (timed here when not given). */
  cost?: number;
}

/** Acceptance counts are scaled down past this many tried tokens, so kappa follows a drifting policy. */
const CALIBRATION_WINDOW = 2000;
/** Weight of the timing averages' newest sample. */
const TIMING_EMA = 0.1;

export class ModelDrafter implements Drafter {
  readonly name = "model";
  /** Tokens the drafter engine has seen per request (its KV holds all but possibly the last). */
  private readonly known = new Map<number, number[]>();
  /** The drafter's probabilities of the tokens it last proposed, per request (for calibration). */
  private readonly proposed = new Map<number, number[]>();
  /** Steps of each request since it last drafted. */
  private readonly idle = new Map<number, number>();
  private readonly opts: ModelDrafterOptions;
  private tried = 0;
  private hits = 0;
  private confidence = 0;
  private draftStepMs = 0;
  private verifyStepMs = 0;
  private lastProposeEnd = 0;

  constructor(
    private readonly engine: Engine,
    opts: Partial<ModelDrafterOptions> = {},
  ) {
    this.opts = { minReach: 0.05, costAware: true, probeEvery: 8, ...opts };
  }

  /** kappa: measured acceptance per unit of confidence (1 when calibration is off). */
  get calibration(): number {
    return this.opts.costAware ? (this.hits + 1) / (this.confidence + 1) : 1;
  }

  /** One drafter step over one verifier step, as timed so far (0 until both are measured or when calibration is off). */
  get cost(): number {
    if (!this.opts.costAware) return 0;
    return this.opts.cost ?? (this.verifyStepMs > 0 ? this.draftStepMs / this.verifyStepMs : 0);
  }

  metrics(): Record<string, number> {
    const round = (x: number) => Math.round(x * 1e4) / 1e4;
    return { kappa: round(this.calibration), cost: round(this.cost) };
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    const start = performance.now();
    // a gap far above the average is idle time (a server between requests), not a verifier step
    if (this.lastProposeEnd > 0) this.verifyStepMs = ema(this.verifyStepMs, Math.min(start - this.lastProposeEnd, 4 * this.verifyStepMs || Infinity));
    try {
      return await this.draft(requests);
    } finally {
      this.lastProposeEnd = performance.now();
    }
  }

  private async draft(requests: DraftRequest[]): Promise<Trie[]> {
    const kappa = this.calibration;
    const threshold = Math.max(this.opts.minReach, this.cost);
    const drafts: number[][] = requests.map(() => []);
    const confidences: number[][] = requests.map(() => []);
    const probing = new Set<number>();
    let live = this.worthDrafting(requests, Math.min(1, kappa) >= threshold, probing);
    let appends = new Map(live.map((i) => [i, this.catchUp(requests[i])]));
    const reach = requests.map(() => 1);
    for (let depth = 0; live.length > 0; depth++) {
      const steps: SeqStep[] = live.map((i) => ({
        seqId: requests[i].id,
        append: appends.get(i)!,
        params: requests[i].params,
        seed: requests[i].seed,
        maxEmit: 1,
      }));
      const t0 = performance.now();
      const results = await this.engine.step(steps);
      // the cost of one more drafted token: a step that feeds one token per request (the first step
      // also catches up on what the verifier accepted, many tokens after a pause)
      if (depth > 0) this.draftStepMs = ema(this.draftStepMs, performance.now() - t0);
      const next = new Map<number, number[]>();
      live = live.filter((i, k) => {
        const r = requests[i];
        const t = results[k].tokens[0];
        const p = Math.exp(results[k].logprobs[0]);
        reach[i] *= Math.min(1, kappa * p);
        // a probe proposes its first token whatever its estimate: that is what it measures
        if (reach[i] < threshold && !(probing.has(i) && drafts[i].length === 0)) return false;
        drafts[i].push(t);
        confidences[i].push(p);
        this.known.get(r.id)!.push(t);
        next.set(i, [t]);
        return drafts[i].length < r.maxDepth && !probing.has(i) && !this.engine.info.eosIds.includes(t);
      });
      appends = next;
    }
    return drafts.map((d, i) => {
      const kept = d.slice(0, requests[i].maxNodes);
      if (kept.length > 0) this.proposed.set(requests[i].id, confidences[i].slice(0, kept.length));
      return chain(kept);
    });
  }

  /** Indices of the requests to draft for: all of them when a sure token pays, else those due a probe (added to `probing`). */
  private worthDrafting(requests: DraftRequest[], pays: boolean, probing: Set<number>): number[] {
    const live = requests
      .map((_, i) => i)
      .filter((i) => {
        const r = requests[i];
        if (r.maxDepth <= 0) return false;
        if (pays) return true;
        const idle = (this.idle.get(r.id) ?? 0) + 1;
        this.idle.set(r.id, idle);
        if (idle < this.opts.probeEvery) return false;
        probing.add(i);
        return true;
      });
    for (const i of live) this.idle.set(requests[i].id, 0);
    return live;
  }

  /** Rolls the drafter's KV back to the prefix it shares with the verified sequence; returns the tokens to feed. */
  private catchUp(r: DraftRequest): number[] {
    const truth = [...r.promptIds, ...r.output];
    const known = this.known.get(r.id) ?? [];
    const cached = this.engine.cachedLength(r.id);
    let common = 0;
    while (common < cached && common < truth.length && known[common] === truth[common]) common++;
    common = Math.min(common, truth.length - 1); // the step must append at least one token
    if (cached > common) this.engine.truncate(r.id, common);
    this.known.set(r.id, truth);
    return truth.slice(common);
  }

  /** The verifier walked `accepted` of the last proposal: tokens 1..accepted+1 were tried. */
  observe(id: number, _emitted: readonly number[], accepted: number): void {
    const conf = this.proposed.get(id);
    if (!conf) return;
    this.proposed.delete(id);
    const tried = Math.min(accepted + 1, conf.length);
    this.tried += tried;
    this.hits += Math.min(accepted, tried);
    for (let i = 0; i < tried; i++) this.confidence += conf[i];
    if (this.tried > CALIBRATION_WINDOW) {
      const s = CALIBRATION_WINDOW / this.tried;
      this.tried *= s;
      this.hits *= s;
      this.confidence *= s;
    }
  }

  finish(r: DraftRequest): void {
    this.known.delete(r.id);
    this.proposed.delete(r.id);
    this.idle.delete(r.id);
    this.engine.release(r.id);
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}

function ema(average: number, sample: number): number {
  return average === 0 ? sample : average + TIMING_EMA * (sample - average);
}
