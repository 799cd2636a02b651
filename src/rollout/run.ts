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
import type { DraftCost, DrafterName } from "../drafters/registry";
import type { Engine } from "../engine/engine";
import { driftedModel, meanKl } from "../models/registry";
import type { SamplingParams } from "../sampling/sampler";
import { deriveSeed } from "../sampling/seeds";
import { type CoreStats, type FinishReason, RolloutCore, type SpecConfig } from "./core";
import { CrossEpoch, MODE_REGISTRY, type Mode, speculationOf } from "./modes";

export interface RolloutPlan {
  modelDir: string;
  promptIds: number[][];
  /**
   * Fresh prompts per epoch (GRPO seldom repeats a prompt soon): epoch e runs `epochPrompts[e]`
   * instead of `promptIds` (same count per epoch); history then comes from siblings only.
   */
  epochPrompts?: number[][][];
  n: number;
  maxTokens: number;
  params: SamplingParams;
  seed: number;
  maxBatch: number;
  epochs: number;
  /** Relative weight perturbation per epoch (0: the same model every epoch). */
  drift: number;
  mode: Mode;
  /** vanilla: its drafter (decoupled: model). */
  drafter?: DrafterName;
  /** specactor: the drafters merged per request (default suffix, ngram, model). */
  drafters?: DrafterName[];
  /** specactor: the policy (cost, or an ablation: const-price, fixed, batch-table). */
  policy?: string;
  /** specactor: weight drafts by predicted remaining length (default on). */
  makespan?: boolean;
  draftLen: number;
  /** The model drafter: a drafter name of the epoch model (q8, layers8) or a prepared directory; default: the model's first drafter. */
  drafterModel?: string;
  /** The model drafter's cost model (default "auto"). */
  draftCost?: DraftCost;
  threads?: number;
  /** decoupled mode: the drafter engine's threads (default 1); the verifier gets the remaining cores. */
  drafterThreads?: number;
  /** The suffix drafter's history store bounds (defaults: src/drafters/history-store.ts). */
  historyMaxPrompts?: number;
  historyMaxNodes?: number;
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
  name: string;
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
  /** specactor: the policy, its cost model (curve, mean error) and per-drafter figures. */
  specactor?: Record<string, unknown>;
}

export interface RolloutHooks {
  onTokens?: (n: number) => void;
  /** After every engine step of epoch `epoch`, with its sequences (benchmarks plot the live batch). */
  onStep?: (epoch: number, sequences: number) => void;
  onSample?: () => void;
  onEpoch?: (e: EpochSummary) => void;
}

export function epochSeed(seed: number, epoch: number): number {
  return epoch === 0 ? seed : deriveSeed(seed, 0xffffffff, epoch);
}

function drafterSummary(name: string, draftLen: number, s: NonNullable<CoreStats["drafter"]>): DrafterSummary {
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
export { MODES, type Mode, speculationOf, threadSplit } from "./modes";
export { DRAFTERS, type DrafterName, type DraftCost, makeDrafter, parseDraftCost, modelDrafterOptions } from "../drafters/registry";

export async function runRollout(plan: RolloutPlan, hooks: RolloutHooks = {}) {
  const choice = speculationOf(plan.mode, plan.drafter, plan.drafters?.join(","));
  const mode = MODE_REGISTRY[choice.mode];
  const cross = new CrossEpoch();
  const records: SampleRecord[] = [];
  const epochs: EpochSummary[] = [];
  const modelDirs: string[] = [];
  let engineName = "";
  let report: Record<string, unknown> | undefined;
  try {
    for (let e = 0; e < plan.epochs; e++) {
      const modelDir = await driftedModel(plan.modelDir, plan.drift, e);
      modelDirs.push(modelDir);
      const { engine, spec } = await mode.setup({ ...plan, drafter: choice.drafter, drafters: choice.drafters }, modelDir, cross);
      engineName = engine.info.name;
      try {
        const { records: recs, summary } = await runEpoch(engine, plan, e, spec, hooks);
        records.push(...recs);
        epochs.push(summary);
      } finally {
        await cross.release(spec?.drafter);
        await engine.close();
      }
    }
    report = cross.specactor?.report();
  } finally {
    await cross.close();
  }
  if (plan.drift > 0 && plan.epochs > 1) {
    for (let e = 1; e < plan.epochs; e++) epochs[e].kl_from_previous = round(await klBetween(modelDirs[e - 1], modelDirs[e], plan, records, e - 1), 6);
  }
  epochs.forEach((s) => hooks.onEpoch?.(s));
  return { records, summary: { ...summarize(plan, engineName, epochs), ...(report ? { specactor: report } : {}) } as RolloutSummary };
}

async function runEpoch(engine: Engine, plan: RolloutPlan, epoch: number, spec: SpecConfig | undefined, hooks: RolloutHooks) {
  const core = new RolloutCore(engine, plan.maxBatch, spec);
  core.onTokens = hooks.onTokens;
  core.onEngineStep = (n) => hooks.onStep?.(epoch, n);
  const base = epochSeed(plan.seed, epoch);
  const requests = promptsOf(plan, epoch).flatMap((ids, j) =>
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
    ...(s.drafter && spec ? { drafter: drafterSummary(spec.drafter.name, spec.draftLen, { ...s.drafter, metrics: core.drafterMetrics() }) } : {}),
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
      rows.map((r) => JSON.stringify({ ids: [...promptsOf(plan, epoch)[r.prompt_index], ...r.token_ids], start: promptsOf(plan, epoch)[r.prompt_index].length })).join("\n") + "\n",
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

/** The prompts epoch `epoch` runs. */
export function promptsOf(plan: Pick<RolloutPlan, "promptIds" | "epochPrompts">, epoch: number): number[][] {
  return plan.epochPrompts?.[epoch] ?? plan.promptIds;
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
