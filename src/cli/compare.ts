/**
 * `specactor compare`: plain and speculative rollouts of the same prompts, seeds and epochs, side by
 * side in one run (the machines are shared and noisy, so only ratios measured together mean much).
 * Each mode starts from an empty history store. Per epoch it prints tokens/s, the speed-up over plain,
 * acceptance, and exactness: how many samples equal plain's token for token, and the divergence rate
 * (first mismatches per generated token; floating-point differences between batched multi-token
 * verification and single-token decoding can flip a near-tie, rarely).
 */
import * as fs from "node:fs";
import { drafterDir, resolveModel } from "../models/registry";
import { readPrompts } from "../rollout/prompts";
import { DRAFTERS, type DrafterName, parseDraftCost } from "../drafters/registry";
import { POLICIES, speculationOf } from "../rollout/modes";
import { type RolloutPlan, type RolloutSummary, type SampleRecord, runRollout } from "../rollout/run";
import { validateParams } from "../sampling/sampler";
import { freshSeed } from "../sampling/seeds";
import { type OptSpec, UsageError, helpText, parseArgs, usage } from "./args";
import { Progress } from "./progress";
import { loadPromptIds } from "./prompt-input";

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "prompts", type: "string", default: "gsm8k:32", metavar: "FILE|gsm8k:N", help: "prompts (JSONL or the built-in set)" },
  { name: "modes", type: "string", default: "plain,ngram,suffix,model,specactor", metavar: "LIST", help: "plain, the drafters to run as vanilla speculation, decoupled (the model drafter running ahead on a core of its own) and specactor (--drafters merged under the cost-model policy; specactor:POLICY runs an ablation); model:NAME and decoupled:NAME run the drafter model NAME (q8, layers8)" },
  { name: "drafters", type: "string", metavar: "LIST", help: "the drafters of the specactor modes (default suffix,ngram,model)" },
  { name: "n", type: "int", default: 4, help: "samples per prompt" },
  { name: "max-tokens", type: "int", default: 256, help: "maximum generated tokens per sample" },
  { name: "temperature", type: "number", default: 1, help: "sampling temperature" },
  { name: "top-p", type: "number", default: 1, help: "nucleus mass" },
  { name: "top-k", type: "int", default: -1, help: "top-k; -1 or 0 disables" },
  { name: "seed", type: "int", metavar: "S", help: "rollout seed (fresh if omitted)" },
  { name: "max-batch", type: "int", default: 4, help: "most sequences in one engine step" },
  { name: "draft-len", type: "int", default: 4, metavar: "K", help: "draft depth per verify step" },
  { name: "draft-cost", type: "string", default: "auto", metavar: "auto|off|X", help: "model drafter: draft a token only while its estimated chance of acceptance beats its cost; auto times the drafter against the verifier, X fixes the ratio of their step costs, off drafts while the drafter is confident" },
  { name: "epochs", type: "int", default: 2, help: "epochs per mode" },
  { name: "drift", type: "number", default: 0.01, metavar: "SCALE", help: "relative weight perturbation per epoch" },
  { name: "threads", type: "int", help: "onnxruntime threads (default: all cores)" },
  { name: "drafter-threads", type: "int", default: 1, help: "decoupled: the drafter's threads, taken from --threads" },
  { name: "json", type: "string", metavar: "FILE", help: "write every mode's summary and the comparison as JSON" },
  { name: "quiet", type: "flag", help: "no progress bars" },
];

export interface ModeComparison {
  mode: string;
  epoch: number;
  tokens_per_s: number;
  speedup: number;
  mean_accepted_per_verify_step?: number;
  acceptance_rate?: number;
  exact_samples: number;
  samples: number;
  divergences: number;
  divergence_rate: number;
}

/** Samples equal to plain's, and first-mismatch events per plain token. */
export function exactness(plain: SampleRecord[], other: SampleRecord[], epoch: number) {
  const p = plain.filter((r) => r.epoch === epoch);
  const o = other.filter((r) => r.epoch === epoch);
  let exact = 0;
  let tokens = 0;
  p.forEach((r, i) => {
    tokens += r.token_ids.length;
    const a = r.token_ids;
    const b = o[i]?.token_ids ?? [];
    if (a.length === b.length && a.every((t, k) => t === b[k])) exact++;
  });
  const divergences = p.length - exact;
  return { exact, samples: p.length, divergences, rate: divergences / Math.max(1, tokens) };
}

export async function compareCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(
      helpText("specactor compare [--model smollm2] [--modes plain,ngram,suffix,model] [options]", "Plain vs vanilla speculation with each drafter, side by side: speed-up per epoch, acceptance, exactness.", OPTIONS),
    );
    return;
  }
  const a = parseArgs(argv, OPTIONS);
  const modes = (a.modes as string).split(",").map((m) => m.trim());
  const specDrafters = usage(() => speculationOf("specactor", undefined, a.drafters as string | undefined)).drafters;
  for (const m of modes) {
    const { drafter, drafterModel, policy } = parseMode(m);
    if (policy !== undefined) {
      if (!POLICIES.includes(policy)) throw new UsageError(`mode '${m}': unknown policy '${policy}' (${POLICIES.join(", ")})`);
      continue;
    }
    if (m !== "plain" && !(DRAFTERS as readonly string[]).includes(drafter)) throw new UsageError(`unknown mode '${m}' (plain, ${DRAFTERS.join(", ")}, model:NAME, decoupled, decoupled:NAME, specactor, specactor:POLICY)`);
    if (drafterModel !== undefined && drafter !== "model") throw new UsageError(`mode '${m}': only the model drafter takes a name`);
  }
  if (modes[0] !== "plain") modes.unshift("plain");
  const params = validateParams({ temperature: a.temperature as number, topP: a["top-p"] as number, topK: a["top-k"] as number });
  const seed = (a.seed as number | undefined) ?? freshSeed();
  const draftCost = usage(() => parseDraftCost(a["draft-cost"] as string));
  if ((a["drafter-threads"] as number) < 1) throw new UsageError(`--drafter-threads must be >= 1, got ${a["drafter-threads"]}`);
  const prompts = readPrompts(a.prompts as string); // bad input fails before any model work
  const modelDir = await resolveModel(a.model as string);
  for (const m of modes) {
    const { drafterModel, policy } = parseMode(m);
    if (policy !== undefined) continue;
    if (drafterModel !== undefined) usage(() => drafterDir(modelDir, drafterModel));
  }
  const { promptIds, tokenizer } = await loadPromptIds(prompts, modelDir, false);
  tokenizer?.close();
  const base: Omit<RolloutPlan, "mode" | "drafter"> = {
    modelDir,
    promptIds,
    n: a.n as number,
    maxTokens: a["max-tokens"] as number,
    params,
    seed,
    maxBatch: a["max-batch"] as number,
    epochs: a.epochs as number,
    drift: a.drift as number,
    draftLen: a["draft-len"] as number,
    draftCost,
    threads: a.threads as number | undefined,
    drafterThreads: a["drafter-threads"] as number,
  };
  const out = (s: string) => process.stdout.write(s + "\n");
  out(
    `compare: ${promptIds.length} prompts x n=${base.n}, max ${base.maxTokens} tokens, T=${params.temperature} top-p=${params.topP} top-k=${params.topK}, ` +
      `batch <= ${base.maxBatch}, ${base.epochs} epoch(s), drift ${base.drift}, draft length ${base.draftLen}, draft cost ${draftCost}, seed ${seed}`,
  );
  const runs: { mode: string; records: SampleRecord[]; summary: RolloutSummary }[] = [];
  for (const mode of modes) {
    const { drafter, drafterModel, decoupled, policy } = parseMode(mode);
    const plan: RolloutPlan =
      policy !== undefined
        ? { ...base, mode: "specactor", drafters: specDrafters, policy }
        : {
            ...base,
            mode: mode === "plain" ? "plain" : decoupled ? "decoupled" : "vanilla",
            drafter: mode === "plain" ? undefined : (drafter as DrafterName),
            drafterModel,
          };
    const progress = new Progress(mode, promptIds.length * base.n * base.epochs, !a.quiet);
    const r = await runRollout(plan, { onTokens: (k) => progress.addTokens(k), onSample: () => progress.complete() });
    progress.finish();
    runs.push({ mode, ...r });
  }
  const plain = runs[0];
  const rows: ModeComparison[] = [];
  for (let e = 0; e < base.epochs; e++) {
    const plainEpoch = plain.summary.per_epoch[e];
    out(`\nepoch ${e}${plainEpoch.kl_from_previous !== undefined ? ` (mean KL from epoch ${e - 1}'s model: ${plainEpoch.kl_from_previous})` : ""}`);
    out(`  ${"mode".padEnd(13)} ${"tok/s".padStart(8)} ${"speed-up".padStart(9)} ${"acc/step".padStart(9)} ${"accept".padStart(7)} ${"exact".padStart(9)} ${"diverge/tok".padStart(12)}`);
    for (const run of runs) {
      const s = run.summary.per_epoch[e];
      const x = exactness(plain.records, run.records, e);
      const row: ModeComparison = {
        mode: run.mode,
        epoch: e,
        tokens_per_s: s.tokens_per_s,
        speedup: round(s.tokens_per_s / plainEpoch.tokens_per_s),
        ...(s.drafter ? { mean_accepted_per_verify_step: s.drafter.mean_accepted_per_verify_step, acceptance_rate: s.drafter.acceptance_rate } : {}),
        exact_samples: x.exact,
        samples: x.samples,
        divergences: x.divergences,
        divergence_rate: x.rate,
      };
      rows.push(row);
      out(
        `  ${run.mode.padEnd(13)} ${s.tokens_per_s.toFixed(1).padStart(8)} ${(row.speedup.toFixed(2) + "x").padStart(9)} ` +
          `${(row.mean_accepted_per_verify_step?.toFixed(2) ?? "-").padStart(9)} ${(row.acceptance_rate?.toFixed(2) ?? "-").padStart(7)} ` +
          `${`${x.exact}/${x.samples}`.padStart(9)} ${x.rate.toExponential(1).padStart(12)}`,
      );
    }
  }
  if (a.json) fs.writeFileSync(a.json as string, JSON.stringify({ seed, comparison: rows, runs: runs.map((r) => ({ mode: r.mode, summary: r.summary })) }, null, 1) + "\n");
}

/**
 * `plain`, a drafter name (vanilla), `decoupled` (the model drafter, decoupled; `:NAME` picks the
 * drafter model, as for `model:NAME`), or `specactor` (`specactor:POLICY`: an ablation of its policy).
 */
function parseMode(mode: string): { drafter: string; drafterModel?: string; decoupled: boolean; policy?: string } {
  const [name, arg] = mode.split(":");
  if (name === "specactor") return { drafter: "", decoupled: false, policy: arg ?? "cost" };
  return name === "decoupled" ? { drafter: "model", drafterModel: arg, decoupled: true } : { drafter: name, drafterModel: arg, decoupled: false };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
