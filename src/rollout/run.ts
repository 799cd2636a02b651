/**
 * A whole rollout: prompts x n samples x epochs through the rollout core, plain or speculative.
 * Seeds are derived as
 *
 *     epoch seed  S_e = S                              for e = 0
 *                     = deriveSeed(S, 2^32 - 1, e)     for e >= 1
 *     sample seed     = deriveSeed(S_e, j, i)          (prompt j, sample i; src/sampling/seeds.ts)
 *
 * so a sample's tokens depend on (S, e, j, i, prompt, parameters, epoch model) only, never on
 * batching, the mode or the drafter. With `drift`, epoch e runs on the model perturbed e times
 * (emulating the policy moving between RL steps); the history drafter keeps what it learnt.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Drafter } from "../drafters/drafter";
import { ModelDrafter, type ModelDrafterOptions } from "../drafters/model";
import { NgramDrafter } from "../drafters/ngram";
import { SuffixDrafter } from "../drafters/suffix";
import type { Engine } from "../engine/engine";
import { OnnxEngine } from "../engine/onnx-engine";
import { ThreadedEngine } from "../engine/threaded-engine";
import { drafterDir, driftedModel, meanKl } from "../models/registry";
import type { SamplingParams } from "../sampling/sampler";
import { deriveSeed } from "../sampling/seeds";
import { type CoreStats, type FinishReason, RolloutCore } from "./core";

/**
 * plain: no drafts. vanilla: one drafter and the verifier take turns on every core (coupled).
 * decoupled: the model drafter runs ahead on cores of its own (`drafterThreads`, default 1) while the
 * verifier runs on the rest, and each verify step takes whatever the drafter has ready.
 */
export type Mode = "plain" | "vanilla" | "decoupled";
export const MODES = ["plain", "vanilla", "decoupled"] as const;
export const DRAFTERS = ["ngram", "suffix", "model"] as const;
export type DrafterName = (typeof DRAFTERS)[number];

export interface RolloutPlan {
  modelDir: string;
  promptIds: number[][];
  n: number;
  maxTokens: number;
  params: SamplingParams;
  seed: number;
  maxBatch: number;
  epochs: number;
  /** Relative weight perturbation per epoch (0: the same model every epoch). */
  drift: number;
  mode: Mode;
  drafter?: DrafterName;
  draftLen: number;
  /** The model drafter: a drafter name of the epoch model (q8, layers8) or a prepared directory; default: the model's first drafter. */
  drafterModel?: string;
  /** The model drafter's cost model (default "auto"). */
  draftCost?: DraftCost;
  threads?: number;
  /** decoupled mode: the drafter engine's threads (default 1); the verifier gets the remaining cores. */
  drafterThreads?: number;
}

/**
 * How the model drafter weighs a drafted token's chance of acceptance against its cost
 * (`src/drafters/model.ts`): "auto" times the drafter and verifier steps, a number fixes the ratio of
 * their costs, "off" drafts while the drafter's own confidence stays above 5% (the draft length is
 * then nearly fixed).
 */
export type DraftCost = "auto" | "off" | number;

/** Checks `--mode` and `--drafter` together; returns the drafter (decoupled implies model) or throws a message for the user. */
export function modeDrafter(mode: string, drafter: string | undefined): DrafterName | undefined {
  if (!(MODES as readonly string[]).includes(mode)) throw new Error(`--mode ${mode} is not supported (supported: ${MODES.join(", ")})`);
  if (mode === "decoupled") drafter ??= "model";
  if (mode === "vanilla" && !drafter) throw new Error(`--mode vanilla needs --drafter (${DRAFTERS.join(", ")})`);
  if (drafter !== undefined && !(DRAFTERS as readonly string[]).includes(drafter)) throw new Error(`unknown drafter '${drafter}' (known: ${DRAFTERS.join(", ")})`);
  if (mode === "plain" && drafter) throw new Error("--drafter needs --mode vanilla or decoupled");
  if (mode === "decoupled" && drafter !== "model") throw new Error(`--mode decoupled runs the model drafter, not '${drafter}'`);
  return drafter as DrafterName | undefined;
}

/** Parses `--draft-cost`; throws a message for the user on anything else. */
export function parseDraftCost(s: string): DraftCost {
  if (s === "auto" || s === "off") return s;
  const x = Number(s);
  if (s.trim() === "" || !Number.isFinite(x) || x < 0) throw new Error(`--draft-cost must be auto, off or a number >= 0, got '${s}'`);
  return x;
}

export function modelDrafterOptions(cost: DraftCost = "auto"): Partial<ModelDrafterOptions> {
  if (cost === "off") return { costAware: false };
  return cost === "auto" ? { costAware: true } : { costAware: true, cost };
}

export interface SampleRecord {
  epoch: number;
  prompt_index: number;
  sample_index: number;
  seed: number;
  token_ids: number[];
  logprobs: number[];
  finish_reason: FinishReason;
}

export interface DrafterSummary {
  name: DrafterName;
  draft_len: number;
  verify_steps: number;
  proposed_tokens: number;
  accepted_tokens: number;
  /** Accepted draft tokens per sequence-step that carried a draft. */
  mean_accepted_per_verify_step: number;
  acceptance_rate: number;
  errors: number;
  last_error?: string;
  /** The drafter's own figures at the end (the model drafter: its measured acceptance and cost). */
  metrics?: Record<string, number>;
}

export interface EpochSummary {
  epoch: number;
  model: string;
  generated_tokens: number;
  wall_s: number;
  tokens_per_s: number;
  engine_steps: number;
  mean_batch_occupancy: number;
  peak_batch: number;
  finish_reasons: Record<FinishReason, number>;
  drafter?: DrafterSummary;
  /** Mean per-token KL(previous epoch's model || this epoch's), on the previous epoch's samples. */
  kl_from_previous?: number;
}

export interface RolloutSummary extends Omit<EpochSummary, "epoch" | "model" | "kl_from_previous"> {
  engine: string;
  model: string;
  mode: Mode;
  prompts: number;
  samples: number;
  epochs: number;
  drift: number;
  seed: number;
  max_batch: number;
  per_epoch: EpochSummary[];
}

export interface RolloutHooks {
  onTokens?: (n: number) => void;
  onSample?: () => void;
  onEpoch?: (e: EpochSummary) => void;
}

export function epochSeed(seed: number, epoch: number): number {
  return epoch === 0 ? seed : deriveSeed(seed, 0xffffffff, epoch);
}

function drafterSummary(name: DrafterName, draftLen: number, s: NonNullable<CoreStats["drafter"]>): DrafterSummary {
  return {
    name,
    draft_len: draftLen,
    verify_steps: s.verifySeqSteps,
    proposed_tokens: s.proposedTokens,
    accepted_tokens: s.acceptedTokens,
    mean_accepted_per_verify_step: round(s.acceptedTokens / Math.max(1, s.verifySeqSteps), 3),
    acceptance_rate: round(s.acceptedTokens / Math.max(1, s.proposedTokens), 4),
    errors: s.errors,
    ...(s.lastError ? { last_error: s.lastError } : {}),
    ...(s.metrics ? { metrics: s.metrics } : {}),
  };
}

/** Runs every epoch; returns the records (epoch-major, then prompt, then sample) and the summary. */
export async function runRollout(plan: RolloutPlan, hooks: RolloutHooks = {}) {
  const drafterName = modeDrafter(plan.mode, plan.drafter);
  const split = plan.mode === "decoupled" ? threadSplit(plan.threads, plan.drafterThreads) : undefined;
  const history = plan.drafter === "suffix" ? new SuffixDrafter() : undefined;
  const records: SampleRecord[] = [];
  const epochs: EpochSummary[] = [];
  const modelDirs: string[] = [];
  let engineName = "";
  for (let e = 0; e < plan.epochs; e++) {
    const modelDir = await driftedModel(plan.modelDir, plan.drift, e);
    modelDirs.push(modelDir);
    // decoupled: the verifier steps off the main thread, so the drafter's loop runs while it verifies
    const engine = split ? await ThreadedEngine.load(modelDir, { threads: split.verifier }) : await OnnxEngine.load(modelDir, { threads: plan.threads });
    engineName = engine.info.name;
    const ownThread = split ? { threads: split.drafter, threaded: true, decoupled: true } : {};
    const drafter: Drafter | undefined = drafterName ? (history ?? (await makeDrafter(drafterName, modelDir, { ...plan, ...ownThread }))) : undefined;
    try {
      const { records: recs, summary } = await runEpoch(engine, plan, e, drafter, hooks);
      records.push(...recs);
      epochs.push(summary);
    } finally {
      if (drafter && drafter !== history) await drafter.close?.();
      await engine.close();
    }
  }
  if (plan.drift > 0 && plan.epochs > 1) {
    for (let e = 1; e < plan.epochs; e++) epochs[e].kl_from_previous = round(await klBetween(modelDirs[e - 1], modelDirs[e], plan, records, e - 1), 6);
  }
  epochs.forEach((s) => hooks.onEpoch?.(s));
  return { records, summary: summarize(plan, engineName, epochs) };
}

/** A fresh drafter by name; `model` loads the drafter model (`drafterDir`: by default `modelDir`'s 8-bit copy). */
export async function makeDrafter(
  name: DrafterName | undefined,
  modelDir: string,
  opts: {
    drafterModel?: string;
    draftCost?: DraftCost;
    threads?: number;
    /** the drafter engine on its own thread (a server, decoupled mode) */
    threaded?: boolean;
    /** draft ahead while the verifier runs (they overlap where both engines step off the main thread) */
    decoupled?: boolean;
  } = {},
): Promise<Drafter> {
  switch (name) {
    case "ngram":
      return new NgramDrafter();
    case "suffix":
      return new SuffixDrafter();
    case "model": {
      const dir = drafterDir(modelDir, opts.drafterModel);
      const load = opts.threaded ? ThreadedEngine.load : OnnxEngine.load;
      return new ModelDrafter(await load(dir, { threads: opts.threads }), { ...modelDrafterOptions(opts.draftCost), decoupled: opts.decoupled ?? false });
    }
    default:
      throw new Error(`unknown drafter '${name}'`);
  }
}

/** Decoupled mode's cores: the drafter's (default 1) and the verifier's (the rest of `threads`, default all cores, at least 1). */
export function threadSplit(threads: number | undefined, drafterThreads: number | undefined): { verifier: number; drafter: number } {
  const total = threads ?? os.cpus().length;
  const drafter = drafterThreads ?? 1;
  if (!Number.isInteger(drafter) || drafter < 1) throw new Error(`drafter threads must be an integer >= 1, got ${drafterThreads}`);
  return { verifier: Math.max(1, total - drafter), drafter };
}

async function runEpoch(engine: Engine, plan: RolloutPlan, epoch: number, drafter: Drafter | undefined, hooks: RolloutHooks) {
  const core = new RolloutCore(engine, plan.maxBatch, drafter ? { drafter, draftLen: plan.draftLen } : undefined);
  core.onTokens = hooks.onTokens;
  const base = epochSeed(plan.seed, epoch);
  const requests = plan.promptIds.flatMap((ids, j) =>
    Array.from({ length: plan.n }, (_, i) => ({
      j,
      i,
      req: { promptIds: ids, params: plan.params, seed: deriveSeed(base, j, i), maxTokens: plan.maxTokens },
    })),
  );
  requests.forEach(({ req, j }) => {
    try {
      core.check(req);
    } catch (e) {
      throw new Error(`prompt ${j}: ${(e as Error).message}`);
    }
  });
  const t0 = performance.now();
  const records: SampleRecord[] = await Promise.all(
    requests.map(async ({ j, i, req }) => {
      const r = await core.submit(req);
      hooks.onSample?.();
      return { epoch, prompt_index: j, sample_index: i, seed: r.seed, token_ids: r.tokenIds, logprobs: r.logprobs, finish_reason: r.finishReason };
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const s = core.stats;
  const finish = { stop: 0, length: 0, abort: 0 };
  for (const r of records) finish[r.finish_reason]++;
  const summary: EpochSummary = {
    epoch,
    model: engine.info.model,
    generated_tokens: s.generatedTokens,
    wall_s: round(wall, 3),
    tokens_per_s: round(s.generatedTokens / wall, 2),
    engine_steps: s.engineSteps,
    mean_batch_occupancy: round(s.seqSteps / Math.max(1, s.engineSteps), 3),
    peak_batch: s.peakBatch,
    finish_reasons: finish,
    ...(s.drafter && plan.drafter ? { drafter: drafterSummary(plan.drafter, plan.draftLen, { ...s.drafter, metrics: core.drafterMetrics() }) } : {}),
  };
  return { records, summary };
}

async function klBetween(a: string, b: string, plan: RolloutPlan, records: SampleRecord[], epoch: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "specactor-kl-"));
  try {
    const file = path.join(dir, "sequences.jsonl");
    const rows = records.filter((r) => r.epoch === epoch).slice(0, 16);
    fs.writeFileSync(
      file,
      rows.map((r) => JSON.stringify({ ids: [...plan.promptIds[r.prompt_index], ...r.token_ids], start: plan.promptIds[r.prompt_index].length })).join("\n") + "\n",
    );
    return await meanKl(a, b, file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function summarize(plan: RolloutPlan, engine: string, epochs: EpochSummary[]): RolloutSummary {
  const sum = (f: (e: EpochSummary) => number) => epochs.reduce((a, e) => a + f(e), 0);
  const tokens = sum((e) => e.generated_tokens);
  const wall = sum((e) => e.wall_s);
  const steps = sum((e) => e.engine_steps);
  const ds = epochs.map((e) => e.drafter).filter((d): d is DrafterSummary => d !== undefined);
  const drafter =
    ds.length > 0
      ? drafterSummary(ds[0].name, ds[0].draft_len, {
          verifySeqSteps: ds.reduce((a, d) => a + d.verify_steps, 0),
          proposedTokens: ds.reduce((a, d) => a + d.proposed_tokens, 0),
          acceptedTokens: ds.reduce((a, d) => a + d.accepted_tokens, 0),
          errors: ds.reduce((a, d) => a + d.errors, 0),
          lastError: ds.map((d) => d.last_error).filter(Boolean).pop(),
          metrics: ds[ds.length - 1].metrics,
        })
      : undefined;
  return {
    engine,
    model: epochs[0]?.model ?? "",
    mode: plan.mode,
    prompts: plan.promptIds.length,
    samples: plan.promptIds.length * plan.n * plan.epochs,
    epochs: plan.epochs,
    drift: plan.drift,
    seed: plan.seed,
    max_batch: plan.maxBatch,
    generated_tokens: tokens,
    wall_s: round(wall, 3),
    tokens_per_s: round(tokens / Math.max(wall, 1e-9), 2),
    engine_steps: steps,
    mean_batch_occupancy: round(sum((e) => e.mean_batch_occupancy * e.engine_steps) / Math.max(1, steps), 3),
    peak_batch: Math.max(0, ...epochs.map((e) => e.peak_batch)),
    finish_reasons: { stop: sum((e) => e.finish_reasons.stop), length: sum((e) => e.finish_reasons.length), abort: sum((e) => e.finish_reasons.abort) },
    ...(drafter ? { drafter } : {}),
    per_epoch: epochs,
  };
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
