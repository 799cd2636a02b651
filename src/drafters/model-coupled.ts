/**
 * The coupled model drafter: the drafter and the verifier take turns. At each verify step the drafter
 * engine catches each request up on what the verifier accepted and decodes its chain, one token per
 * request per drafter step, under the stop rule of model.ts: token d+1 is drafted while
 * reach_{d+1} >= (E_d / T_d) (c + v).
 *
 * A further drafter step is run only if its token would pass at the typical acceptance abar, so a
 * step whose token is bound to fail is not run. When even the first token would not (abar < c + v),
 * the request is not drafted at all and the drafter costs nothing; it still drafts one token every
 * `probeEvery` of the request's steps, so that the table follows the drafter if it starts to agree
 * (the policy drifts between epochs). Probes are paid from an allowance (`worthDrafting`).
 *
 * c is a drafter step of the batch that drafts (one token per request, as every step past the first
 * of a chain feeds) over the verifier's step, the time between two `propose` calls. The drafter step
 * is predicted by a cost model fitted on the drafter engine's own steps (`stepCost`).
 */
import type { Engine, SeqStep } from "../engine/engine";
import { chain, type DraftRequest, type Drafter } from "./drafter";
import type { Trie } from "../engine/trie";
import { StepCostModel, shapeOf } from "../scheduler/cost-model";
import type { AcceptanceTable } from "./acceptance-table";
import { ModelDrafterBase, ema, type ModelDrafterOptions } from "./model";

/** Probes may take this share of the verifier's time while drafting does not pay. */
/** What drafting can save per remaining token, as a share of the request's part of a verify step. */
const CATCH_UP_SAVING = 0.3;
const PROBE_SHARE = 0.02;
/** The probe allowance saves up to this many verifier steps' worth (a probe may cost more than one step). */
const PROBE_ALLOWANCE_STEPS = 2;

export class CoupledModelDrafter extends ModelDrafterBase implements Drafter {
  readonly name = "model";
  /** Tokens the drafter engine has seen per request (its KV holds all but possibly the last). */
  private readonly known = new Map<number, number[]>();
  /** Steps of each request since it last drafted. */
  private readonly idle = new Map<number, number>();
  /** The drafter engine's step cost by shape (src/scheduler/cost-model.ts). */
  readonly stepCost = new StepCostModel("drafter");
  /** Verifier time set aside for probes (see `worthDrafting`). */
  private probeAllowanceMs = 0;
  constructor(engine: Engine, opts: Partial<ModelDrafterOptions> = {}, table?: AcceptanceTable) {
    super(engine, opts, table);
  }

  /**
   * c for a drafter step of `batch` requests: the drafter engine's cost model (fitted on its own
   * steps, by shape) over the verifier's step time. Before both are measured it is 1 (as dear as the
   * verifier), so an unmeasured drafter only probes; `opts.cost` fixes it.
   */
  private costFor(batch: number, context: number): number {
    if (!this.opts.costAware) return 0;
    if (this.opts.cost !== undefined) return this.opts.cost;
    if (!this.stepCost.ready || this.verifyStepMs <= 0) return (this.lastCost = 1);
    const ms = this.stepCost.predict({ sequences: batch, rowsPerSequence: 1, sampledRows: batch, context });
    return (this.lastCost = ms / this.verifyStepMs);
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    this.proposeBegins();
    try {
      return await this.draft(requests);
    } finally {
      this.proposeEnds();
    }
  }

  private async draft(requests: DraftRequest[]): Promise<Trie[]> {
    const drafting = requests.filter((r) => r.maxDepth > 0).length;
    const context = Math.max(0, ...requests.map((r) => r.promptIds.length + r.output.length));
    const tokenCost = this.opts.costAware ? this.costFor(Math.max(1, drafting), context) + this.rowPrice(requests) : 0;
    const typical = this.typical;
    const drafts: number[][] = requests.map(() => []);
    const confidences: number[][] = requests.map(() => []);
    const reaches: number[][] = requests.map(() => []);
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
      const shape = shapeOf(steps, (id) => this.engine.cachedLength(id));
      const t0 = performance.now();
      const results = await this.engine.step(steps);
      this.stepCost.observe(shape, performance.now() - t0);
      // the cost of one more drafted token: a step that feeds one token per request (the first step
      // also catches up on what the verifier accepted, many tokens after a pause)
      if (depth > 0) this.draftStepMs = ema(this.draftStepMs, performance.now() - t0);
      else if (probing.size > 0) this.probeAllowanceMs -= performance.now() - t0;
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
        reaches[i].push(chance);
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
      return { ...chain(kept), scores: reaches[i].slice(0, kept.length) };
    });
  }

  /**
   * Indices of the requests to draft for: all of them when a sure token pays, else probes (added to
   * `probing`). Probes are paid from an allowance of PROBE_SHARE of the verifier's time: a probe's
   * first step catches the drafter up on everything the verifier accepted since the request last
   * drafted (a whole prefill for one never drafted), so among the requests due one (idle for
   * `probeEvery` steps) the cheapest to catch up go first, as many as the drafter's cost model says
   * the allowance covers (one when it has no fit yet). On a batch where drafting does not pay, the
   * drafter then costs at most that share, and its acceptance table still learns.
   */
  /**
   * Whether a request whose drafter KV is `backlog` tokens behind is worth catching up: a request that
   * drafted recently is (its backlog is the last chain); one far behind costs a prefill of its backlog,
   * paid for only by what drafting saves over the rest of its budget, at most CATCH_UP_SAVING of its
   * share of each verify step per remaining token. (A tail request with a few tokens left is not worth
   * a whole prefill.)
   */
  private catchUpPays(r: DraftRequest, backlog: number, batch: number, verifyStepMs: number): boolean {
    if (!this.opts.costAware || backlog <= 2 * r.maxDepth + 2 || !this.stepCost.ready || !(verifyStepMs > 0)) return true;
    const catchUp = this.stepCost.predict({ sequences: 1, rowsPerSequence: backlog, sampledRows: 1, context: backlog + this.engine.cachedLength(r.id) });
    return catchUp <= (r.maxTokens - r.output.length) * (verifyStepMs / batch) * CATCH_UP_SAVING;
  }

  private worthDrafting(requests: DraftRequest[], pays: boolean, probing: Set<number>): number[] {
    const eligible = requests.map((_, i) => i).filter((i) => requests[i].maxDepth > 0);
    const backlog = (i: number) => requests[i].promptIds.length + requests[i].output.length - this.engine.cachedLength(requests[i].id);
    const verifyStepMs = this.verifyStepMs;
    if (pays) {
      const live = eligible.filter((i) => this.catchUpPays(requests[i], backlog(i), requests.length, verifyStepMs));
      for (const i of live) this.idle.set(requests[i].id, 0);
      return live;
    }
    this.probeAllowanceMs = Math.min(this.probeAllowanceMs + PROBE_SHARE * verifyStepMs, PROBE_ALLOWANCE_STEPS * verifyStepMs);
    const due = eligible
      .filter((i) => {
        const id = requests[i].id;
        const idle = (this.idle.get(id) ?? 0) + 1;
        this.idle.set(id, idle);
        return idle >= this.opts.probeEvery;
      })
      .sort((a, b) => backlog(a) - backlog(b));
    const live: number[] = [];
    let longest = 0;
    for (const i of due) {
      longest = Math.max(longest, backlog(i));
      const k = live.length + 1;
      const cost = this.stepCost.ready ? this.stepCost.predict({ sequences: k, rowsPerSequence: longest, sampledRows: k, context: longest + this.engine.cachedLength(requests[i].id) }) : 0;
      // with no fit yet, one probe measures what a probe costs
      if (live.length > 0 && (!this.stepCost.ready || cost > this.probeAllowanceMs)) break;
      if (live.length === 0 && this.stepCost.ready && cost > this.probeAllowanceMs) break;
      live.push(i);
    }
    for (const i of live) {
      probing.add(i);
      this.idle.set(requests[i].id, 0);
    }
    return live;
  }

  /** Rolls the drafter's KV back to the prefix it shares with the verified sequence; returns the tokens to feed. */
  private catchUp(r: DraftRequest): number[] {
    const truth = [...r.promptIds, ...r.output];
    const feed = this.rollBack(r.id, this.known.get(r.id) ?? [], truth);
    this.known.set(r.id, truth);
    return feed;
  }

  /** The verifier walked `accepted` of the last proposal: tokens 1..accepted+1 were tried (of the `verified` sent). */
  observe(id: number, _emitted: readonly number[], accepted: number, verified?: number): void {
    this.recordOutcome(id, accepted, verified);
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
