/**
 * A whole rollout: prompts x n samples through the rollout core, with seeds derived as
 *
 *     seed(prompt j, sample i) = deriveSeed(S, j, i)        (src/sampling/seeds.ts)
 *
 * so a sample's tokens depend on (S, j, i, prompt, parameters) only, never on batching.
 */
import type { Engine } from "../engine/engine";
import type { SamplingParams } from "../sampling/sampler";
import { deriveSeed } from "../sampling/seeds";
import { RolloutCore, type FinishReason } from "./core";

export interface RolloutPlan {
  promptIds: number[][];
  n: number;
  maxTokens: number;
  params: SamplingParams;
  seed: number;
  maxBatch: number;
}

export interface SampleRecord {
  prompt_index: number;
  sample_index: number;
  seed: number;
  token_ids: number[];
  logprobs: number[];
  finish_reason: FinishReason;
}

export interface RolloutSummary {
  engine: string;
  model: string;
  mode: "plain";
  prompts: number;
  samples: number;
  seed: number;
  max_batch: number;
  generated_tokens: number;
  wall_s: number;
  tokens_per_s: number;
  engine_steps: number;
  mean_batch_occupancy: number;
  peak_batch: number;
  finish_reasons: Record<FinishReason, number>;
}

export interface RolloutHooks {
  onTokens?: (n: number) => void;
  onSample?: () => void;
}

export async function runRollout(engine: Engine, plan: RolloutPlan, hooks: RolloutHooks = {}) {
  const core = new RolloutCore(engine, plan.maxBatch);
  core.onTokens = hooks.onTokens;
  const requests = plan.promptIds.flatMap((ids, j) =>
    Array.from({ length: plan.n }, (_, i) => ({
      j,
      i,
      req: { promptIds: ids, params: plan.params, seed: deriveSeed(plan.seed, j, i), maxTokens: plan.maxTokens },
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
      return {
        prompt_index: j,
        sample_index: i,
        seed: r.seed,
        token_ids: r.tokenIds,
        logprobs: r.logprobs,
        finish_reason: r.finishReason,
      };
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const s = core.stats;
  const finish = { stop: 0, length: 0 };
  for (const r of records) finish[r.finish_reason]++;
  const summary: RolloutSummary = {
    engine: engine.info.name,
    model: engine.info.model,
    mode: "plain",
    prompts: plan.promptIds.length,
    samples: records.length,
    seed: plan.seed,
    max_batch: plan.maxBatch,
    generated_tokens: s.generatedTokens,
    wall_s: round(wall, 3),
    tokens_per_s: round(s.generatedTokens / wall, 2),
    engine_steps: s.engineSteps,
    mean_batch_occupancy: round(s.seqSteps / Math.max(1, s.engineSteps), 3),
    peak_batch: s.peakBatch,
    finish_reasons: finish,
  };
  return { records, summary };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
