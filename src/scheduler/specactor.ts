/**
 * SpecActor's scheduling: Fastest-of-N drafting under a cost-model policy, seen by the rollout core
 * as one drafter.
 *
 * Every step, each drafter proposes candidates for every request (a generous budget: proposing is
 * cheap for the model-free drafters, and the model drafter prices its own steps with the row price
 * the cost model quotes, `DraftRequest.rowPrice`). A request's proposals are merged into one trie
 * (merge.ts), each node's scores calibrated into chances (calibration.ts), the chances made
 * non-increasing down each path, and the selector (selectors.ts) decides for the whole batch how many
 * of each request's best nodes the step verifies. The verified outcome of every node feeds the
 * calibration of every drafter that proposed it and the request's per-drafter factor, so the method
 * that is winning on a request gets its budget; with rows cheap (a draining batch, a GPU), more
 * methods' nodes fit and every request gets more of them.
 *
 * The verifier's sampling rule makes any trie safe (docs/SAMPLING.md): the policy decides how many
 * tokens a step emits, never which.
 */
import type { Trie } from "../engine/trie";
import type { DraftRequest, Drafter, StepTiming } from "../drafters/drafter";
import { DrafterCalibration, Q_MAX, RequestFactors } from "./calibration";
import { StepCostModel } from "./cost-model";
import { DrafterGate } from "./drafter-gate";
import { LengthPredictor } from "./lengths";
import { acceptedPath, type MergedTrie, mergeTries, subTrie } from "./merge";
import { type Candidate, type Selector, makeSelector } from "./selectors";

export interface SpecActorOptions {
  /** The selector (`cost` is SpecActor; the others are ablations). */
  policy: string;
  /** Deepest candidate asked of a drafter. */
  maxDepth: number;
  /** Most candidate nodes asked of each drafter per request. */
  candidateNodes: number;
  /** Least predicted gain over plain for a step to draft at all (the cost model's error margin). */
  minGain: number;
  /** Weight nodes by their request's predicted remaining length (off: tokens per second only). */
  makespan: boolean;
  /** The draft length of the fixed and batch-table ablations. */
  draftLen: number;
}

export const SPECACTOR_DEFAULTS: SpecActorOptions = { policy: "cost", maxDepth: 8, candidateNodes: 16, minGain: 0.04, makespan: true, draftLen: 4 };

/** What the policy remembers of a request's step until its outcome is observed. */
interface Pending {
  merged: MergedTrie;
  /** Merged indices verified, in the order of the trie sent to the engine. */
  kept: number[];
  /** Per kept node: per source, the calibrated chance (before the request factor). */
  chances: number[][];
  /** Per kept node: its chance before the policy's own calibration (what that table is indexed by). */
  pre: number[];
  sent: Trie;
}

interface Totals {
  /** Time in the drafter's propose calls. */
  ms: number;
  proposed: number;
  verified: number;
  accepted: number;
}

/** Per-step decision records kept for plots: batch, level, predicted gain. */
const DECISIONS_KEPT = 4000;
/** Cost samples and decisions a report carries (the latest). */
const SAMPLES_REPORTED = 2000;

export class SpecActorDrafter implements Drafter {
  readonly name = "specactor";
  readonly cost: StepCostModel;
  private readonly selector: Selector;
  private readonly calibration: DrafterCalibration[];
  private readonly factors: RequestFactors;
  private readonly gate: DrafterGate;
  /**
   * The last calibration, over the merged chance of the nodes the policy verifies: choosing the best
   * of several estimates (the best source, the top nodes of each request) selects the lucky ones,
   * and this table measures what the selected nodes actually achieve.
   */
  private readonly policyCalibration = new DrafterCalibration("policy");
  private readonly pending = new Map<number, Pending>();
  private readonly totals: Totals[];
  private readonly opts: SpecActorOptions;
  private levelSum = 0;
  private verifyMs = 0;
  /** Time in `propose`, drafters included. */
  private proposeMs = 0;
  /** Time in `observe` (learning from outcomes, forwarding to the drafters). */
  private observeMs = 0;
  /** Sum of the chances of the nodes verified, and the nodes accepted: the policy's own calibration check. */
  private expectedAccepted = 0;
  private acceptedTotal = 0;
  /** The last selection runs as two engine steps (`splitStep`). */
  private split = false;
  private splitSteps = 0;
  private steps = 0;
  private draftingSteps = 0;
  readonly decisions: { batch: number; level: number; predicted_gain: number; predicted_ms: number }[] = [];

  constructor(
    readonly drafters: Drafter[],
    opts: Partial<SpecActorOptions> = {},
    /** Shared across epochs: what the rollout has learnt of lengths and costs stays learnt. */
    readonly lengths = new LengthPredictor(),
    cost?: StepCostModel,
  ) {
    if (drafters.length === 0) throw new Error("specactor needs at least one drafter");
    this.opts = { ...SPECACTOR_DEFAULTS, ...opts };
    this.selector = makeSelector(this.opts.policy);
    this.cost = cost ?? new StepCostModel("verifier");
    this.calibration = drafters.map((d) => new DrafterCalibration(d.name));
    this.factors = new RequestFactors(drafters.length);
    this.gate = new DrafterGate(drafters.length);
    this.totals = drafters.map(() => ({ ms: 0, proposed: 0, verified: 0, accepted: 0 }));
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    const t0 = performance.now();
    try {
      return await this.proposeAll(requests);
    } finally {
      this.proposeMs += performance.now() - t0;
    }
  }

  private async proposeAll(requests: DraftRequest[]): Promise<Trie[]> {
    if (requests.length === 0) return [];
    const append = requests.map((r) => (r.output.length === 0 ? r.promptIds.length : 1));
    // prefill: the drafters have nothing of the response yet, and the step's cost is another regime
    this.split = false;
    if (append.some((a) => a > 1)) return requests.map(() => ({ tokens: [], parents: [] }));
    const context = Math.max(...requests.map((r) => r.promptIds.length + r.output.length));
    const rowPrice = this.rowPrice(requests.length, Math.max(...append), context);
    const asks = requests.map((r) => ({
      ...r,
      maxDepth: Math.min(r.maxDepth, this.opts.maxDepth),
      maxNodes: this.opts.candidateNodes,
      rowPrice,
    }));
    const plainMs = this.cost.predict({ sequences: requests.length, rowsPerSequence: Math.max(...append), sampledRows: requests.length, context });
    // one after the other, so each drafter's time is its own (the gate prices it)
    const proposals: (Trie | undefined)[][] = [];
    for (const [j, d] of this.drafters.entries()) {
      proposals.push(asks.map(() => undefined));
      if (!this.gate.shouldRun(j, requests.length, plainMs)) continue;
      const t0 = performance.now();
      try {
        const tries = await d.propose(asks);
        if (Array.isArray(tries) && tries.length === asks.length) proposals[j] = tries;
      } catch {
        // one drafter failing leaves the others' drafts
      }
      const ms = performance.now() - t0;
      this.totals[j].ms += ms;
      this.gate.ran(j, requests.length, ms);
    }
    const weights = this.weights(requests);
    const merged: MergedTrie[] = [];
    const pres: number[][] = [];
    const cands: Candidate[] = requests.map((r, i) => {
      const props = this.drafters.map((_, d) => ({ drafter: d, trie: valid(proposals[d][i], asks[i]) ?? { tokens: [], parents: [] } }));
      props.forEach((p) => (this.totals[p.drafter].proposed += p.trie.tokens.length));
      const m = mergeTries(props);
      merged.push(m);
      pres.push(this.chances(r.id, m));
      return { q: pres[i].map((x) => this.policyCalibration.calibrated(x)), append: append[i], weight: weights[i], maxNodes: r.maxNodes };
    });
    cands.forEach((c, i) => {
      for (let n = 0; n < c.q.length; n++) if (merged[i].parents[n] >= 0) c.q[n] = Math.min(c.q[n], c.q[merged[i].parents[n]]);
    });
    const orders = cands.map((c, i) => priority(merged[i], c.q, requests[i].maxDepth));
    cands.forEach((c, i) => (c.q = orders[i].map((n) => c.q[n])));
    const sel = this.selector.select(cands, { cost: this.cost, context, minGain: this.opts.minGain, draftLen: this.opts.draftLen });
    this.split = sel.split === true;
    if (this.split) this.splitSteps++;
    this.steps++;
    this.levelSum += sel.level;
    if (sel.level > 0) this.draftingSteps++;
    this.decisions.push({ batch: requests.length, level: sel.level, predicted_gain: round(sel.predictedGain, 4), predicted_ms: round(sel.predictedMs, 3) });
    if (this.decisions.length > DECISIONS_KEPT) this.decisions.splice(0, this.decisions.length - DECISIONS_KEPT);
    sel.counts.forEach((n, i) => {
      for (let j = 0; j < n; j++) this.expectedAccepted += cands[i].q[j];
    });
    return requests.map((r, i) => {
      const kept = orders[i].slice(0, sel.counts[i]);
      const m = merged[i];
      const sent = subTrie(m, kept);
      const order = [...kept].sort((a, b) => a - b); // subTrie's order
      this.pending.set(r.id, {
        merged: m,
        kept: order,
        chances: order.map((n) => m.sources[n].map((s) => this.calibration[s.drafter].calibrated(s.score))),
        pre: order.map((n) => pres[i][n]),
        sent,
      });
      return sent;
    });
  }

  /** A verify row's price in units of a sequence's share of a plain step: (T(N + 1) - T(N)) / T(N). */
  private rowPrice(batch: number, rows: number, context: number): number {
    if (!this.cost.ready) return 1;
    const at = (n: number) => this.cost.predict({ sequences: batch, rowsPerSequence: n, sampledRows: batch * (1 + n - rows), context: context + n });
    const T = at(rows);
    return T > 0 ? (at(rows + 1) - T) / T : 1;
  }

  /** Predicted remaining length over the batch mean (1 each when makespan weighting is off). */
  private weights(requests: DraftRequest[]): number[] {
    if (!this.opts.makespan) return requests.map(() => 1);
    const rem = requests.map((r) => this.lengths.remaining(r.historyKey, r.output.length, r.maxTokens));
    const mean = rem.reduce((a, b) => a + b, 0) / rem.length;
    return rem.map((x) => Math.min(5, Math.max(0.2, x / mean)));
  }

  /** Each merged node's chance: the best of its sources' calibrated, request-adjusted scores, never above its parent's. */
  private chances(id: number, m: MergedTrie): number[] {
    const q = m.sources.map((srcs) => {
      let best = 0;
      for (const s of srcs) best = Math.max(best, Math.min(Q_MAX, this.calibration[s.drafter].calibrated(s.score) * this.factors.factor(id, s.drafter)));
      return best;
    });
    for (let i = 0; i < q.length; i++) if (m.parents[i] >= 0) q[i] = Math.min(q[i], q[m.parents[i]]);
    return q;
  }

  observe(id: number, emitted: readonly number[], accepted: number): void {
    const t0 = performance.now();
    this.observeOne(id, emitted, accepted);
    this.observeMs += performance.now() - t0;
  }

  private observeOne(id: number, emitted: readonly number[], accepted: number): void {
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (!p) {
      for (const d of this.drafters) d.observe?.(id, emitted, 0, 0);
      return;
    }
    const onPath = new Set(acceptedPath(p.sent, emitted, accepted).map((i) => p.kept[i]));
    this.acceptedTotal += onPath.size;
    this.learn(id, p, onPath);
    const kept = new Set(p.kept);
    // each drafter hears how much of its own proposal was verified and accepted
    this.drafters.forEach((d, j) => {
      const mine = p.merged.mapped[j];
      let verified = 0;
      let own = 0;
      for (const n of mine) {
        if (kept.has(n)) verified++;
        if (onPath.has(n)) own++;
      }
      d.observe?.(id, emitted, own, verified);
    });
  }

  private learn(id: number, p: Pending, onPath: Set<number>): void {
    const hits = new Float64Array(this.drafters.length);
    const expected = new Float64Array(this.drafters.length);
    p.kept.forEach((n, k) => {
      const hit = onPath.has(n);
      this.policyCalibration.record(p.pre[k], hit);
      if (hit) for (const s of p.merged.sources[n]) this.gate.credit(s.drafter, 1 / p.merged.sources[n].length);
      p.merged.sources[n].forEach((s, j) => {
        this.calibration[s.drafter].record(s.score, hit);
        expected[s.drafter] += p.chances[k][j];
        if (hit) hits[s.drafter] += 1;
        this.totals[s.drafter].verified++;
        if (hit) this.totals[s.drafter].accepted++;
      });
    });
    if (p.kept.length > 0) this.factors.record(id, hits, expected);
  }

  splitStep(): boolean {
    return this.split;
  }

  stepTimed(t: StepTiming): void {
    this.verifyMs += t.ms;
    // the policy prices verify steps; a prefill step (many rows per sequence, no drafts) is another regime
    if (!t.prefill) this.cost.observe(t.shape, t.ms);
    for (const d of this.drafters) d.stepTimed?.(t);
  }

  finish(r: DraftRequest, output: readonly number[]): void {
    this.pending.delete(r.id);
    this.factors.forget(r.id);
    this.lengths.record(r.historyKey, output.length);
    for (const d of this.drafters) d.finish?.(r, output);
  }

  metrics(): Record<string, number> {
    const m: Record<string, number> = {
      steps: this.steps,
      drafting_steps: this.draftingSteps,
      split_steps: this.splitSteps,
      mean_level: round(this.levelSum / Math.max(1, this.steps), 3),
      verify_ms: Math.round(this.verifyMs),
      propose_ms: Math.round(this.proposeMs),
      observe_ms: Math.round(this.observeMs),
      expected_accepted: Math.round(this.expectedAccepted),
      accepted: this.acceptedTotal,
      cost_model_error: round(this.cost.meanRelativeError, 4),
    };
    this.drafters.forEach((d, i) => {
      const t = this.totals[i];
      m[`${d.name}.propose_ms`] = Math.round(t.ms);
      m[`${d.name}.proposed`] = t.proposed;
      m[`${d.name}.verified`] = t.verified;
      m[`${d.name}.accepted`] = t.accepted;
      m[`${d.name}.acceptance`] = round(this.calibration[i].acceptance, 4);
      for (const [k, v] of Object.entries(d.metrics?.() ?? {})) m[`${d.name}.${k}`] = v;
    });
    return m;
  }

  /** The cost model and the per-step decisions (the latest `samples` of each), for reports, plots and `stats`. */
  report(samples = SAMPLES_REPORTED): Record<string, unknown> {
    return {
      policy: this.selector.name,
      drafters: this.drafters.map((d) => d.name),
      cost_model: this.cost.summary(),
      metrics: this.metrics(),
      drafter_costs: Object.fromEntries(this.drafters.map((d, i) => [d.name, this.gate.table()[i]])),
      cost_samples: this.cost.samples.slice(-samples),
      decisions: this.decisions.slice(-samples),
    };
  }

  async close(): Promise<void> {
    for (const d of this.drafters) await d.close?.();
  }
}

/** A drafter's trie if it keeps the ask's budget; anything else counts as no proposal. */
function valid(t: Trie | undefined, ask: DraftRequest): Trie | undefined {
  if (!t || !Array.isArray(t.tokens) || !Array.isArray(t.parents) || t.tokens.length !== t.parents.length || t.tokens.length > ask.maxNodes) return undefined;
  for (let i = 0; i < t.parents.length; i++) if (!(t.parents[i] >= -1 && t.parents[i] < i)) return undefined;
  return t;
}

function depths(m: MergedTrie): number[] {
  const d: number[] = [];
  m.parents.forEach((p, i) => d.push(p < 0 ? 1 : d[p] + 1));
  return d;
}

/** Node indices within `maxDepth` by chance descending, shallower first on ties (so parents lead). */
function priority(m: MergedTrie, q: number[], maxDepth: number): number[] {
  const d = depths(m);
  return q
    .map((_, i) => i)
    .filter((i) => d[i] <= maxDepth)
    .sort((a, b) => q[b] - q[a] || d[a] - d[b] || a - b);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
