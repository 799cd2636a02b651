/**
 * What an engine step costs, learnt from the engine's own steps: the scheduling policy prices every
 * draft node with it, so it must be right at batch 1 and at batch 256 alike, on a CPU and on a GPU.
 *
 * Shape of a step. Both engines pad every sequence of a step to the longest one (N = the most rows
 * any sequence appends plus drafts), attend over the batch's context capacity P, and run the LM head
 * only on the rows that are sampled (each sequence's root and its trie nodes). So a step of B
 * sequences costs
 *
 *     T = f(B N) + h S + a (B N P),      S = B + (trie nodes in the step)
 *
 * with f the cost of the transformer body per padded row count (flat while the weights' memory
 * traffic dominates, then linear once the GEMMs are compute-bound: the knee is the machine's), h an
 * LM-head row and a one attended (row, position) pair. f is piecewise linear in R = B N with knots at
 * powers of two, and the whole vector theta = (f at the knots, h, a) is fitted by recursive least
 * squares (a Kalman filter on theta) on relative error, with a forgetting factor so the fit follows a
 * machine whose speed drifts. A knot never observed keeps its prior (linear in R through the first
 * observations, an overestimate of a flat-then-linear curve, so the policy errs towards plain);
 * predictions use the monotone envelope of the knots, so one noisy knot never makes a row free.
 *
 * `profileEngine` measures a few shapes at start-up; every step of the rollout then refines the fit.
 */
import type { Engine, SeqStep } from "../engine/engine";

export interface StepShape {
  /** Sequences in the step. */
  sequences: number;
  /** Rows of the longest sequence (appended tokens plus trie nodes). */
  rowsPerSequence: number;
  /** Rows the LM head runs on: one per sequence plus every trie node. */
  sampledRows: number;
  /** Positions each row attends to (the batch's longest cached context plus its new rows). */
  context: number;
}

export interface CostSample {
  predictedMs: number;
  measuredMs: number;
  rows: number;
  sequences: number;
}

/** Knots of f: rows 1, 2, 4, ... 2^MAX_LOG2 (beyond, f continues with its last slope). */
const MAX_LOG2 = 17;
const KNOTS = MAX_LOG2 + 1;
/** Parameters: the knots of f, then h, then a. */
const DIM = KNOTS + 2;
/** Relative standard deviation of one step's time around the model (timing noise on a shared machine). */
const NOISE = 0.08;
/** Per-observation forgetting: about the last 500 steps carry the fit. */
const FORGET = 0.998;
/** Predicted vs measured pairs kept for stats and plots. */
const HISTORY = 4000;

export class StepCostModel {
  private theta = new Float64Array(DIM);
  /** Covariance of theta, row-major DIM x DIM. */
  private cov = new Float64Array(DIM * DIM);
  private priorVar = new Float64Array(DIM);
  private initialised = false;
  private observedKnots = new Uint8Array(KNOTS);
  readonly samples: CostSample[] = [];
  private absErrorSum = 0;
  private observations = 0;
  /** A given curve (`setCurve`), not refitted. */
  private frozen = false;
  private envelopeCache?: number[];

  constructor(readonly name: string) {}

  /** Rows the body runs on: B N. */
  static rows(s: StepShape): number {
    return s.sequences * s.rowsPerSequence;
  }

  /** The feature vector of a step (hat weights on the two knots around R, S, R P). */
  private features(s: StepShape): Float64Array {
    const x = new Float64Array(DIM);
    const R = Math.max(1, StepCostModel.rows(s));
    const k = Math.min(KNOTS - 2, Math.floor(Math.log2(R)));
    const lo = 2 ** k;
    const hi = 2 ** (k + 1);
    const t = (R - lo) / (hi - lo); // > 1 past the last knot: linear extrapolation
    x[k] = 1 - t;
    x[k + 1] = t;
    x[KNOTS] = s.sampledRows;
    x[KNOTS + 1] = R * s.context;
    return x;
  }

  /** The first observation sets the prior: f linear in R through it, h and a a small share of it. */
  private initialise(s: StepShape, ms: number): void {
    const perRow = ms / Math.max(1, StepCostModel.rows(s));
    for (let k = 0; k < KNOTS; k++) {
      this.theta[k] = perRow * 2 ** k;
      this.priorVar[k] = (perRow * 2 ** k) ** 2;
    }
    this.theta[KNOTS] = 0;
    this.priorVar[KNOTS] = perRow ** 2;
    this.theta[KNOTS + 1] = 0;
    this.priorVar[KNOTS + 1] = (perRow / Math.max(64, s.context)) ** 2;
    this.cov.fill(0);
    for (let i = 0; i < DIM; i++) this.cov[i * DIM + i] = this.priorVar[i];
    this.initialised = true;
    this.envelopeCache = undefined;
  }

  get ready(): boolean {
    return this.initialised;
  }

  /** Predicted milliseconds for a step of shape `s` (0 before the first observation). */
  predict(s: StepShape): number {
    if (!this.initialised) return 0;
    const R = Math.max(1, StepCostModel.rows(s));
    const envelope = this.envelope();
    const k = Math.min(KNOTS - 2, Math.floor(Math.log2(R)));
    const lo = 2 ** k;
    const t = (R - lo) / lo;
    // past the last knot the body continues with its last slope, never flatter than the envelope
    const f = envelope[k] + t * Math.max(0, envelope[k + 1] - envelope[k]);
    const h = Math.max(0, this.theta[KNOTS]);
    const a = Math.max(0, this.theta[KNOTS + 1]);
    return f + h * s.sampledRows + a * R * s.context;
  }

  /** The knots of f made non-decreasing (a step with more rows never costs less); cached until the fit changes. */
  private envelope(): number[] {
    if (this.envelopeCache) return this.envelopeCache;
    const out: number[] = [];
    let m = 0;
    for (let k = 0; k < KNOTS; k++) out.push((m = Math.max(m, this.theta[k])));
    return (this.envelopeCache = out);
  }

  /** Folds one measured step into the fit. */
  observe(s: StepShape, ms: number): void {
    if (!(ms > 0) || !Number.isFinite(ms)) return;
    if (!this.initialised) this.initialise(s, ms);
    else this.recordError(s, ms);
    if (this.frozen) return;
    const x = this.features(s);
    const R = StepCostModel.rows(s);
    this.observedKnots[Math.min(KNOTS - 2, Math.floor(Math.log2(Math.max(1, R))))] = 1;
    this.envelopeCache = undefined;
    // Kalman update: gain = C x / (x' C x + noise), theta += gain (ms - x' theta), C -= gain x' C
    const Cx = new Float64Array(DIM);
    for (let i = 0; i < DIM; i++) {
      let acc = 0;
      for (let j = 0; j < DIM; j++) acc += this.cov[i * DIM + j] * x[j];
      Cx[i] = acc;
    }
    let xCx = 0;
    let pred = 0;
    for (let i = 0; i < DIM; i++) {
      xCx += x[i] * Cx[i];
      pred += x[i] * this.theta[i];
    }
    const denom = xCx + (NOISE * ms) ** 2;
    const err = ms - pred;
    for (let i = 0; i < DIM; i++) this.theta[i] += (Cx[i] / denom) * err;
    for (let i = 0; i < DIM; i++) {
      for (let j = 0; j < DIM; j++) this.cov[i * DIM + j] -= (Cx[i] * Cx[j]) / denom;
    }
    // forgetting, capped at the prior so a direction never observed cannot wind up
    for (let i = 0; i < DIM; i++) {
      for (let j = 0; j < DIM; j++) {
        const v = this.cov[i * DIM + j] / FORGET;
        this.cov[i * DIM + j] = i === j ? Math.min(v, this.priorVar[i]) : v;
      }
    }
  }

  private recordError(s: StepShape, ms: number): void {
    const predicted = this.predict(s);
    this.samples.push({ predictedMs: round(predicted, 3), measuredMs: round(ms, 3), rows: StepCostModel.rows(s), sequences: s.sequences });
    if (this.samples.length > HISTORY) this.samples.splice(0, this.samples.length - HISTORY);
    this.absErrorSum += Math.abs(predicted - ms) / ms;
    this.observations++;
  }

  /** Forgets the error record (after the start-up profile, whose shapes the fit was still learning). */
  resetErrors(): void {
    this.samples.length = 0;
    this.absErrorSum = 0;
    this.observations = 0;
  }

  /** Mean |predicted - measured| / measured over every step observed after the first (or the last reset). */
  get meanRelativeError(): number {
    return this.observations > 0 ? this.absErrorSum / this.observations : 0;
  }

  /** h: one LM-head row's cost (ms). */
  get lmHeadMs(): number {
    return Math.max(0, this.theta[KNOTS]);
  }

  /** The fitted curve for stats and plots: f at each knot (envelope), h and a, and which knots were seen. */
  curve(): { rows: number[]; body_ms: number[]; observed: boolean[]; lm_head_ms_per_row: number; attention_ms_per_row_position: number } {
    const env = this.envelope();
    return {
      rows: env.map((_, k) => 2 ** k),
      body_ms: env.map((v) => round(v, 4)),
      observed: [...this.observedKnots].map((b) => b === 1),
      lm_head_ms_per_row: round(Math.max(0, this.theta[KNOTS]), 6),
      attention_ms_per_row_position: Math.max(0, this.theta[KNOTS + 1]),
    };
  }

  /**
   * Replaces the fit with a given curve and stops refitting (tests and what-if runs: a GPU-shaped
   * curve on a CPU); observed steps still count towards the error figures.
   */
  setCurve(bodyMs: (rows: number) => number, lmHeadMsPerRow = 0, attentionMs = 0): void {
    this.frozen = true;
    this.initialise({ sequences: 1, rowsPerSequence: 1, sampledRows: 1, context: 64 }, Math.max(1e-6, bodyMs(1)));
    for (let k = 0; k < KNOTS; k++) this.theta[k] = bodyMs(2 ** k);
    this.theta[KNOTS] = lmHeadMsPerRow;
    this.theta[KNOTS + 1] = attentionMs;
    this.observedKnots.fill(1);
    this.envelopeCache = undefined;
  }

  summary(): Record<string, unknown> {
    return {
      name: this.name,
      steps_observed: this.observations + (this.initialised ? 1 : 0),
      mean_relative_error: round(this.meanRelativeError, 4),
      curve: this.curve(),
    };
  }
}

/** The shape of a step as the engines lay it out (see the module docs). */
export function shapeOf(steps: readonly SeqStep[], cachedLength: (seqId: number) => number): StepShape {
  let N = 1;
  let sampled = 0;
  let context = 0;
  for (const s of steps) {
    const nodes = s.trie?.tokens.length ?? 0;
    const rows = s.append.length + nodes;
    N = Math.max(N, rows);
    sampled += 1 + nodes;
    context = Math.max(context, cachedLength(s.seqId) + rows);
  }
  return { sequences: steps.length, rowsPerSequence: N, sampledRows: sampled, context };
}

/**
 * Start-up profile: a few verify-step shapes on scratch sequences (after an untimed prefill: chains
 * of 0..7 draft nodes on every sequence, or on one only), each timed on its second run (the first run
 * of a shape pays the engine's own warm-up). Scratch ids are released before it returns. Costs a few
 * seconds on a CPU model.
 */
export async function profileEngine(engine: Engine, model: StepCostModel, opts: { batches?: number[]; nodes?: number[]; promptLength?: number } = {}): Promise<void> {
  const batches = opts.batches ?? [1, 4, 16, 64];
  const nodes = opts.nodes ?? [0, 1, 3, 7, -3, -7];
  const promptLength = opts.promptLength ?? 16;
  const V = engine.info.vocabSize;
  const token = (i: number) => 1 + ((i * 7919) % Math.max(1, V - 1));
  let nextId = 2 ** 52;
  const chainOf = (k: number, i: number) => ({ tokens: Array.from({ length: k }, (_, j) => token(i + j + 3)), parents: Array.from({ length: k }, (_, j) => j - 1) });
  for (const B of batches) {
    const ids = Array.from({ length: B }, () => nextId++);
    // k > 0: every sequence drafts k nodes; k < 0: only the first drafts -k (the others pad), which
    // separates the LM head's rows from the body's padded rows
    const step = (k: number, first: boolean): SeqStep[] =>
      ids.map((seqId, i) => ({
        seqId,
        append: first ? Array.from({ length: promptLength }, (_, j) => token(i * 31 + j)) : [token(i)],
        trie: k < 0 && i === 0 ? chainOf(-k, i) : k > 0 ? { tokens: Array.from({ length: k }, (_, j) => token(i + j + 3)), parents: Array.from({ length: k }, (_, j) => j - 1) } : undefined,
        params: { temperature: 1, topK: 0, topP: 1 },
        seed: 1,
        maxEmit: 1,
      }));
    try {
      await timed(engine, model, step(0, true), false);
      for (const k of nodes) {
        for (let rep = 0; rep < 2; rep++) {
          // the chain is rolled back after each step, so every run sees the same context
          const before = ids.map((id) => engine.cachedLength(id));
          await timed(engine, model, step(k, false), rep === 1);
          ids.forEach((id, i) => engine.cachedLength(id) > before[i] && engine.truncate(id, before[i]));
        }
      }
    } finally {
      for (const id of ids) if (engine.sequences().includes(id)) engine.release(id);
    }
  }
  model.resetErrors();
}

async function timed(engine: Engine, model: StepCostModel, steps: SeqStep[], record = true): Promise<void> {
  const shape = shapeOf(steps, (id) => engine.cachedLength(id));
  const t0 = performance.now();
  await engine.step(steps);
  if (record) model.observe(shape, performance.now() - t0);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
