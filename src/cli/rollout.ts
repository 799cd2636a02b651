/** `specactor rollout`: plain (and later speculative) rollouts from a JSONL prompt file. */
import * as fs from "node:fs";
import { drafterDir, resolveModel } from "../models/registry";
import { readPrompts } from "../rollout/prompts";
import { DRAFTERS, parseDraftCost } from "../drafters/registry";
import { MODES, POLICIES, speculationOf } from "../rollout/modes";
import { runRollout, type RolloutSummary, type EpochSummary } from "../rollout/run";
import { SPECULATION_OPTIONS, historyBounds } from "./speculation-options";
import { validateParams } from "../sampling/sampler";
import { freshSeed } from "../sampling/seeds";
import { PythonTokenizer } from "../tokenizer/python-tokenizer";
import { type OptSpec, UsageError, helpText, parseArgs, usage } from "./args";
import { Progress } from "./progress";
import { loadPromptIds } from "./prompt-input";

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "prompts", type: "string", required: true, metavar: "FILE.jsonl", help: 'JSONL of {"prompt"} or {"prompt_ids"}, or gsm8k:N[:SEED]' },
  { name: "n", type: "int", default: 1, help: "samples per prompt" },
  { name: "max-tokens", type: "int", default: 256, help: "maximum generated tokens per sample (EOS included)" },
  { name: "temperature", type: "number", default: 1, help: "sampling temperature; 0 is greedy" },
  { name: "top-p", type: "number", default: 1, help: "nucleus mass in (0, 1]" },
  { name: "top-k", type: "int", default: -1, help: "keep the k most likely tokens; -1 or 0 disables" },
  { name: "repetition-penalty", type: "number", default: 1, help: "only 1 (off) is supported" },
  { name: "seed", type: "int", metavar: "S", help: "rollout seed (sample i of prompt j uses deriveSeed(S, j, i)); fresh if omitted" },
  { name: "max-batch", type: "int", default: 16, help: "most sequences in one engine step" },
  ...SPECULATION_OPTIONS,
  { name: "drafter-model", type: "string", metavar: "NAME|DIR", help: "for --drafter model: a drafter of the model by name (q8: its 8-bit copy, layers8: its first 8 layers) or a prepared directory (default: the first, q8)" },
  { name: "draft-cost", type: "string", default: "auto", metavar: "auto|off|X", help: "model drafter: draft a token only while its estimated chance of acceptance beats its cost; auto times the drafter against the verifier, X fixes the ratio of their step costs, off drafts while the drafter is confident" },
  { name: "epochs", type: "int", default: 1, metavar: "E", help: "rerun the prompts E times with per-epoch seeds, as RL does" },
  { name: "drift", type: "number", default: 0, metavar: "SCALE", help: "perturb the weights by this relative scale each epoch (policy drift)" },
  { name: "out", type: "string", required: true, metavar: "OUT.jsonl", help: "one line per sample, written atomically at the end" },
  { name: "summary-json", type: "string", metavar: "FILE", help: "also write the summary as JSON" },
  { name: "threads", type: "int", help: "onnxruntime intra-op threads (default: all cores)" },
  { name: "drafter-threads", type: "int", default: 1, help: "decoupled: the drafter's threads, taken from --threads" },
  { name: "decode", type: "flag", help: "decode outputs to text for prompt_ids input too (starts Python)" },
  { name: "quiet", type: "flag", help: "no progress bar" },
];

const USAGE = "specactor rollout --prompts FILE.jsonl --out OUT.jsonl [options]";
const SUMMARY =
  "Generates n samples per prompt and writes one JSON line per sample:\n" +
  '  {"prompt_index", "sample_index", "seed", "token_ids", "text", "logprobs", "finish_reason"}\n' +
  "Text prompts go through the model's chat template and outputs are decoded (Python via pythonia);\n" +
  "prompt_ids input needs no Python, and its text is null unless --decode is given.";

export async function rolloutCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(helpText(USAGE, SUMMARY, OPTIONS));
    return;
  }
  const a = parseArgs(argv, OPTIONS);
  const choice = usage(() => speculationOf(a.mode as string, a.drafter as string | undefined, a.drafters as string | undefined));
  const mode = choice.mode;
  const bounds = historyBounds(a);
  const policy = a.policy as string;
  if (!POLICIES.includes(policy)) throw new UsageError(`--policy ${policy} is not known (${POLICIES.join(", ")})`);
  if ((a["drafter-threads"] as number) < 1) throw new UsageError(`--drafter-threads must be >= 1, got ${a["drafter-threads"]}`);
  if ((a["draft-len"] as number) < 1) throw new UsageError(`--draft-len must be >= 1, got ${a["draft-len"]}`);
  if ((a.epochs as number) < 1) throw new UsageError(`--epochs must be >= 1, got ${a.epochs}`);
  if ((a.drift as number) < 0) throw new UsageError(`--drift must be >= 0, got ${a.drift}`);
  if (a["repetition-penalty"] !== 1) throw new UsageError(`--repetition-penalty ${a["repetition-penalty"]} is not supported (only 1)`);
  const params = validateParams({ temperature: a.temperature as number, topP: a["top-p"] as number, topK: a["top-k"] as number });
  const n = a.n as number;
  const maxTokens = a["max-tokens"] as number;
  const maxBatch = a["max-batch"] as number;
  if (n < 1) throw new UsageError(`--n must be >= 1, got ${n}`);
  if (maxTokens < 1) throw new UsageError(`--max-tokens must be >= 1, got ${maxTokens}`);
  if (maxBatch < 1) throw new UsageError(`--max-batch must be >= 1, got ${maxBatch}`);
  const seed = (a.seed as number | undefined) ?? freshSeed();
  if (seed < 0 || !Number.isSafeInteger(seed)) throw new UsageError(`--seed must be an integer in [0, 2^53), got ${seed}`);
  const out = a.out as string;
  const prompts = readPrompts(a.prompts as string); // bad input fails before any model work
  const modelDir = await resolveModel(a.model as string);
  const draftCost = usage(() => parseDraftCost(a["draft-cost"] as string));
  const drafterModel = a["drafter-model"] as string | undefined;
  if (drafterModel !== undefined) usage(() => drafterDir(modelDir, drafterModel));

  fs.rmSync(out, { force: true }); // a failed run must not leave an old file that looks like its output
  const partial = `${out}.partial`;
  let tokenizer: PythonTokenizer | undefined;
  try {
    const loaded = await loadPromptIds(prompts, modelDir, Boolean(a.decode));
    tokenizer = loaded.tokenizer;
    const promptIds = loaded.promptIds;
    const epochs = a.epochs as number;
    const progress = new Progress(mode === "plain" ? "rollout" : `${mode}/${choice.drafter ?? choice.drafters!.join("+")}`, promptIds.length * n * epochs, !a.quiet);
    const { records, summary } = await runRollout(
      {
        modelDir,
        promptIds,
        n,
        maxTokens,
        params,
        seed,
        maxBatch,
        epochs,
        drift: a.drift as number,
        mode,
        drafter: choice.drafter,
        drafters: choice.drafters,
        policy,
        makespan: !a["no-makespan"],
        ...bounds,
        draftLen: a["draft-len"] as number,
        drafterModel,
        draftCost,
        threads: a.threads as number | undefined,
        drafterThreads: a["drafter-threads"] as number,
      },
      { onTokens: (k) => progress.addTokens(k), onSample: () => progress.complete() },
    );
    progress.finish();
    const texts2 = tokenizer ? await tokenizer.decode(records.map((r) => r.token_ids)) : records.map(() => null);
    const lines = records.map((r, i) =>
      JSON.stringify({
        epoch: r.epoch,
        prompt_index: r.prompt_index,
        sample_index: r.sample_index,
        seed: r.seed,
        token_ids: r.token_ids,
        text: texts2[i],
        logprobs: r.logprobs,
        finish_reason: r.finish_reason,
      }),
    );
    fs.writeFileSync(partial, lines.join("\n") + "\n");
    fs.renameSync(partial, out);
    printSummary(summary);
    if (a["summary-json"]) fs.writeFileSync(a["summary-json"] as string, JSON.stringify(summary, null, 1) + "\n");
  } finally {
    fs.rmSync(partial, { force: true });
    tokenizer?.close();
  }
}

export function printSummary(s: RolloutSummary): void {
  const line = (label: string, e: Omit<EpochSummary, "epoch" | "model">) => {
    const d = e.drafter;
    return (
      `${label}: tokens=${e.generated_tokens} wall=${e.wall_s}s tokens/s=${e.tokens_per_s} steps=${e.engine_steps} ` +
      `mean_occupancy=${e.mean_batch_occupancy} peak_batch=${e.peak_batch}` +
      (d ? ` drafter=${d.name} verify_steps=${d.verify_steps} accepted/verify_step=${d.mean_accepted_per_verify_step} acceptance=${d.acceptance_rate} drafter_errors=${d.errors}` : "") +
      ("kl_from_previous" in e && e.kl_from_previous !== undefined ? ` kl_from_previous=${e.kl_from_previous}` : "")
    );
  };
  if (s.epochs > 1) for (const e of s.per_epoch) process.stderr.write(line(`epoch ${e.epoch}`, e) + "\n");
  process.stderr.write(`summary: engine=${s.engine} mode=${s.mode} samples=${s.samples} seed=${s.seed} ` + line("", s).slice(2) + "\n");
}
