/**
 * A model drafter: a cheaper copy of the policy (by default its 8-bit weight quantisation, see
 * python/specactor/models/quantize.py) decodes up to `maxDepth` tokens per request, sampling with the
 * request's own seeded noise and parameters: Gumbel coupling, so where the drafter's distribution is
 * close to the verifier's, its sample is the verifier's sample (acceptance >= (1 - TV) / (1 + TV) per
 * token; Daliri et al. 2024).
 *
 * The drafter engine keeps its own KV per request. Before drafting it is rolled back to the longest
 * prefix it shares with the verified sequence (its rejected drafts are dropped) and fed the rest, so a
 * request that skipped drafting for a while catches up in one step.
 *
 * How long a chain runs. Let p_i be the drafter's probability of the token it drew at depth i (under
 * the request's temperature and top-k/top-p). The chance that the verifier accepts that token, once it
 * reached it, is read from a table indexed by confidence, counted over the last ~2000 tried tokens:
 *
 *     a_i = A[bin(p_i)],   A[b] = (accepted_b + abar) / (tried_b + 1),   abar = (accepted + 1/2) / (tried + 1)
 *
 * five bins of p, each shrunk towards the rate over all of them, abar (so a bin that was never tried
 * starts at what the drafter typically achieves, and gets tried).
 *
 * Confidence predicts acceptance for a drafter that differs from the policy (EAGLE-2, Li et al. 2024),
 * and a truncated policy is often confidently wrong; but a drafter that agrees with the policy is
 * accepted whatever its confidence (a quantised policy drawing a 0.2-probability token with the
 * verifier's noise draws the verifier's token). The table learns either shape.
 *
 * reach_d = a_1 ... a_d is the chance that the verifier walks to depth d. In units of one verifier
 * step, a drafted token costs c (one drafter step, timed here) plus v (its row in the verify pass,
 * `nodeCost`); a step that drafted d tokens is expected to emit E_d = 1 + reach_1 + ... + reach_d
 * tokens in T_d = 1 + d (c + v). Tokens per unit of time, E_d / T_d, grows with the next token while
 *
 *     reach_{d+1} >= (E_d / T_d) (c + v)
 *
 * and, as reach falls with depth, the first token that fails ends the chain (the greedy stop is the
 * best chain length). A further drafter step is run only if its token would pass at the typical
 * acceptance abar, so a step whose token is bound to fail is not run. When even the first token
 * would not (abar < c + v), the request is not drafted at all and the drafter costs nothing; it still
 * drafts one token every `probeEvery` of the request's steps, so that the table follows the drafter
 * if it starts to agree (the policy drifts between epochs).
 *
 * Decoupled mode (`decoupled`). The drafter runs ahead on an engine of its own (its own thread or
 * cores, or drafter workers on other devices) while the verifier runs: a pump steps it whenever a
 * request is short of drafts, guessing the verifier's next sample and drafting on past it, and
 * `propose` hands the verifier whatever lies past the verified sequence, never waiting. A drafted
 * token then costs the verifier only its verify row, so c = 0 below. What the verifier rejects is
 * rolled back at the pump's next step. Measured on this repository's 2-core machine, splitting the
 * cores (one each) costs each engine its second thread, and it only ties the coupled drafter (README).
 *
 * c is a drafter step past the first of a chain (which feeds one token per request) over the time
 * between two `propose` calls (the verifier's step). v is not timed: it depends on the batch, and at
 * batch 1 on this engine a verify row costs about 0.05 of a step (docs/ENGINE.md); the dynamic policy
 * is where profiled per-batch costs belong.
 */
import type { Engine, SeqStep } from "../engine/engine";
import { chain, type DraftRequest, type Drafter } from "./drafter";
import type { Trie } from "../engine/trie";

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
  /**
   * Draft ahead while the verifier runs (see the class docs). The two overlap only where both
   * engines step off the main thread (`ThreadedEngine`, workers); otherwise the pump runs between
   * verifier steps, and the output is the same.
   */
  decoupled: boolean;
}

/** A request's drafter sequence in decoupled mode: `known` is what the drafter has seen or drafted. */
interface Track {
  request: DraftRequest;
  known: number[];
  /** The drafter's probability of each token of `known` it drafted (NaN for tokens it was fed). */
  confs: number[];
  /** The request ended: the pump releases its engine sequence between two steps. */
  released: boolean;
}

/** Acceptance counts are scaled down past this many tried tokens, so the table follows a drifting policy. */
const CALIBRATION_WINDOW = 2000;
/** Confidence bins of the acceptance table: [0, 0.2), [0.2, 0.4), ... [0.8, 1]. */
const BINS = 5;
/** Weight of the timing averages' newest sample. */
const TIMING_EMA = 0.1;

export class ModelDrafter implements Drafter {
  readonly name = "model";
  /** Tokens the drafter engine has seen per request (its KV holds all but possibly the last). */
  private readonly known = new Map<number, number[]>();
  /** The drafter's probabilities of the tokens it last proposed, per request (for the acceptance table). */
  private readonly proposed = new Map<number, number[]>();
  /** Steps of each request since it last drafted. */
  private readonly idle = new Map<number, number>();
  private readonly opts: ModelDrafterOptions;
  private readonly tried = new Float64Array(BINS);
  private readonly hits = new Float64Array(BINS);
  private draftStepMs = 0;
  private verifyStepMs = 0;
  private lastProposeEnd = 0;
  /** Decoupled mode: the requests the pump drafts for, its running loop, and a failure to report. */
  private readonly tracks = new Map<number, Track>();
  private pumping?: Promise<void>;
  private pumpRunning = false;
  private pumpFailure?: Error;
  private closing = false;

  constructor(
    private readonly engine: Engine,
    opts: Partial<ModelDrafterOptions> = {},
  ) {
    this.opts = { minReach: 0.05, costAware: true, nodeCost: 0.05, probeEvery: 8, decoupled: false, ...opts };
  }

  /** a = A[bin(p)]: the estimated chance that the verifier accepts a drafted token of confidence p (p itself when off). */
  acceptance(p: number, typical = this.typicalAcceptance): number {
    if (!this.opts.costAware) return p;
    const b = binOf(p);
    return (this.hits[b] + typical) / (this.tried[b] + 1);
  }

  /** Accepted over tried drafted tokens, in the window. */
  get measuredAcceptance(): number {
    const tried = sum(this.tried);
    return tried > 0 ? sum(this.hits) / tried : 0;
  }

  /** The next drafted token's chance before its confidence is known: the table's rows weighted as tried (prior 1/2). */
  private get typicalAcceptance(): number {
    return (sum(this.hits) + 0.5) / (sum(this.tried) + 1);
  }

  /** One drafter step over one verifier step, as timed so far (0 until both are measured or when costAware is off). */
  get cost(): number {
    if (!this.opts.costAware) return 0;
    return this.opts.cost ?? (this.verifyStepMs > 0 ? this.draftStepMs / this.verifyStepMs : 0);
  }

  metrics(): Record<string, number> {
    const round = (x: number) => Math.round(x * 1e4) / 1e4;
    return { acceptance: round(this.measuredAcceptance), cost: round(this.cost) };
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    const start = performance.now();
    // a gap far above the average is idle time (a server between requests), not a verifier step
    if (this.lastProposeEnd > 0) this.verifyStepMs = ema(this.verifyStepMs, Math.min(start - this.lastProposeEnd, 4 * this.verifyStepMs || Infinity));
    try {
      return this.opts.decoupled ? this.takeAhead(requests) : await this.draft(requests);
    } finally {
      this.lastProposeEnd = performance.now();
    }
  }

  private async draft(requests: DraftRequest[]): Promise<Trie[]> {
    const tokenCost = this.opts.costAware ? this.cost + this.opts.nodeCost : 0;
    const typical = this.opts.costAware ? this.typicalAcceptance : 1;
    const drafts: number[][] = requests.map(() => []);
    const confidences: number[][] = requests.map(() => []);
    const probing = new Set<number>();
    let live = this.worthDrafting(requests, typical >= Math.max(this.opts.minReach, tokenCost), probing);
    let appends = new Map(live.map((i) => [i, this.catchUp(requests[i])]));
    const reach = requests.map(() => 1);
    const expected = requests.map(() => 1); // E_d: 1 + reach_1 + ... + reach_d
    /** The least reach the next token of request i needs: (E_d / T_d) (c + v), at least minReach. */
    const bar = (i: number) => this.bar(expected[i], drafts[i].length, tokenCost);
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
        const chance = reach[i] * this.acceptance(p, typical);
        // a probe proposes its first token whatever its estimate: that is what it measures
        if (chance < bar(i) && !(probing.has(i) && drafts[i].length === 0)) return false;
        drafts[i].push(t);
        confidences[i].push(p);
        reach[i] = chance;
        expected[i] += chance;
        this.known.get(r.id)!.push(t);
        next.set(i, [t]);
        const more = drafts[i].length < r.maxDepth && !probing.has(i) && !this.engine.info.eosIds.includes(t);
        return more && reach[i] * typical >= bar(i);
      });
      appends = next;
    }
    return drafts.map((d, i) => {
      const kept = d.slice(0, requests[i].maxNodes);
      if (kept.length > 0) this.proposed.set(requests[i].id, confidences[i].slice(0, kept.length));
      return chain(kept);
    });
  }

  /** The least reach the next token of a chain needs: (E_d / T_d) (c + v) for d drafted tokens, at least minReach. */
  private bar(expected: number, drafted: number, tokenCost: number): number {
    return Math.max(this.opts.minReach, (expected / (1 + drafted * tokenCost)) * tokenCost);
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

  /**
   * Decoupled: each request's chain is what the pump drafted past the verified sequence, if the
   * verifier stayed on the drafted branch, cut where a token's reach falls below its verify row's
   * worth (the stop rule above with c = 0: the drafter's time is not the verifier's).
   *
   * The verifier never waits for the pump. Its own sample past the chain is a token the drafter need
   * not draft: the pump feeds it together with the token before in one step (a step costs about the
   * same for one token or two), so the two together emit more than the drafter alone could draft.
   * Waiting for a step about to end, when the wait is shorter than the token's expected share of a
   * verify step, measured slower (55.5 against 57.7 tok/s, 8 samples at batch 1).
   */
  private takeAhead(requests: DraftRequest[]): Trie[] {
    const failure = this.pumpFailure;
    this.pumpFailure = undefined;
    if (failure) throw failure;
    const tries = requests.map((r) => {
      const t = this.tracks.get(r.id);
      if (t) t.request = r;
      else this.tracks.set(r.id, { request: r, known: [], confs: [], released: false });
      const c = this.readyChain(r, this.tracks.get(r.id)!);
      if (c.tokens.length > 0) this.proposed.set(r.id, c.confs);
      return chain(c.tokens);
    });
    this.kickPump();
    return tries;
  }

  /** Request r's chain from what the pump has drafted, with the drafter's confidences. */
  private readyChain(r: DraftRequest, t: Track): { tokens: number[]; confs: number[] } {
    const v = this.opts.costAware ? this.opts.nodeCost : 0;
    const typical = this.opts.costAware ? this.typicalAcceptance : 1;
    const base = r.promptIds.length + r.output.length;
    const out = { tokens: [] as number[], confs: [] as number[] };
    if (!onBranch(t.known, r)) return out;
    let reach = 1;
    let expected = 1;
    for (let i = base; i < t.known.length && out.tokens.length < Math.min(r.maxDepth, r.maxNodes); i++) {
      const chance = reach * this.acceptance(t.confs[i], typical);
      if (chance < this.bar(expected, out.tokens.length, v)) break;
      out.tokens.push(t.known[i]);
      out.confs.push(t.confs[i]);
      reach = chance;
      expected += chance;
    }
    return out;
  }

  private kickPump(): void {
    if (this.pumpRunning || this.closing) return;
    this.pumpRunning = true;
    this.pumping = this.pump();
  }

  /**
   * Decoupled: steps the drafter engine while any request is short of drafts, one token per request
   * per step, each request on its latest verified sequence: a request whose verifier left the
   * drafted branch is rolled back and fed what was verified. It runs ahead of the verifier by up to
   * 2 maxDepth + 1 tokens (the chain being verified, the verifier's next sample, the next chain).
   * This is the only place that steps, truncates or releases the drafter engine in this mode.
   */
  private async pump(): Promise<void> {
    try {
      while (!this.closing) {
        const steps: SeqStep[] = [];
        const stepped: Track[] = [];
        for (const [id, t] of this.tracks) {
          if (t.released) {
            this.engine.release(id);
            this.tracks.delete(id);
            continue;
          }
          const append = this.nextFeed(t);
          if (!append) continue;
          steps.push({ seqId: id, append, params: t.request.params, seed: t.request.seed, maxEmit: 1 });
          stepped.push(t);
        }
        if (steps.length === 0) break;
        const t0 = performance.now();
        const results = await this.engine.step(steps);
        this.draftStepMs = ema(this.draftStepMs, performance.now() - t0);
        results.forEach((res, k) => {
          stepped[k].known.push(res.tokens[0]);
          stepped[k].confs.push(Math.exp(res.logprobs[0]));
        });
      }
    } catch (e) {
      this.pumpFailure = e instanceof Error ? e : new Error(String(e));
      // a failed step leaves the engine's sequences unknown: start every request afresh
      for (const [id, t] of this.tracks) {
        if (this.engine.cachedLength(id) > 0) this.engine.release(id);
        t.known = [];
        t.confs = [];
      }
    } finally {
      // cleared in the same turn as the loop's last check, so `finish` never marks a track no pump will see
      this.pumpRunning = false;
    }
  }

  /** The tokens to feed track t next, or undefined when it is far enough ahead (or ended in EOS). */
  private nextFeed(t: Track): number[] | undefined {
    const r = t.request;
    const id = r.id;
    if (!onBranch(t.known, r)) {
      const truth = [...r.promptIds, ...r.output];
      const feed = this.rollBack(id, t.known, truth);
      t.known = truth;
      t.confs = truth.map(() => NaN);
      return feed;
    }
    const ahead = t.known.length - r.promptIds.length - r.output.length;
    if (r.maxDepth <= 0 || ahead >= 2 * r.maxDepth + 1) return undefined;
    if (ahead > 0 && this.engine.info.eosIds.includes(t.known[t.known.length - 1])) return undefined;
    return t.known.slice(this.engine.cachedLength(id));
  }

  /** Rolls the drafter's KV back to the prefix it shares with the verified sequence; returns the tokens to feed. */
  private catchUp(r: DraftRequest): number[] {
    const truth = [...r.promptIds, ...r.output];
    const feed = this.rollBack(r.id, this.known.get(r.id) ?? [], truth);
    this.known.set(r.id, truth);
    return feed;
  }

  /** Truncates sequence `id`'s KV to the prefix `known` shares with `truth`; returns the tokens of `truth` to feed (at least one). */
  private rollBack(id: number, known: readonly number[], truth: readonly number[]): number[] {
    const cached = this.engine.cachedLength(id);
    let common = 0;
    while (common < cached && common < truth.length && known[common] === truth[common]) common++;
    common = Math.min(common, truth.length - 1); // the step must append at least one token
    if (cached > common) this.engine.truncate(id, common);
    return truth.slice(common);
  }

  /** The verifier walked `accepted` of the last proposal: tokens 1..accepted+1 were tried. */
  observe(id: number, _emitted: readonly number[], accepted: number): void {
    const conf = this.proposed.get(id);
    if (!conf) return;
    this.proposed.delete(id);
    const tried = Math.min(accepted + 1, conf.length);
    for (let i = 0; i < tried; i++) {
      const b = binOf(conf[i]);
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

  finish(r: DraftRequest): void {
    this.known.delete(r.id);
    this.proposed.delete(r.id);
    this.idle.delete(r.id);
    const t = this.tracks.get(r.id);
    if (t && this.pumpRunning) {
      t.released = true; // the pump may be stepping it
      return;
    }
    this.tracks.delete(r.id);
    this.engine.release(r.id);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.pumping;
    await this.engine.close();
  }
}

/** Whether `known` starts with the request's verified sequence (prompt and output). */
function onBranch(known: readonly number[], r: DraftRequest): boolean {
  const p = r.promptIds.length;
  if (known.length < p + r.output.length) return false;
  for (let i = r.output.length - 1; i >= 0; i--) if (known[p + i] !== r.output[i]) return false;
  for (let i = 0; i < p; i++) if (known[i] !== r.promptIds[i]) return false;
  return true;
}

function binOf(p: number): number {
  return Math.min(BINS - 1, Math.floor(p * BINS));
}

function sum(xs: Float64Array): number {
  return xs.reduce((a, b) => a + b, 0);
}

function ema(average: number, sample: number): number {
  return average === 0 ? sample : average + TIMING_EMA * (sample - average);
}
