/** `specactor rollout`: plain (and later speculative) rollouts from a JSONL prompt file. */
import * as fs from "node:fs";
import { OnnxEngine } from "../engine/onnx-engine";
import { resolveModel } from "../models/registry";
import { readPrompts } from "../rollout/prompts";
import { runRollout, type RolloutSummary } from "../rollout/run";
import { validateParams } from "../sampling/sampler";
import { freshSeed } from "../sampling/seeds";
import { PythonTokenizer } from "../tokenizer/python-tokenizer";
import { type OptSpec, UsageError, helpText, parseArgs } from "./args";
import { Progress } from "./progress";

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "prompts", type: "string", required: true, metavar: "FILE.jsonl", help: 'JSONL of {"prompt"} or {"prompt_ids"}, or gsm8k:N[:SEED]' },
  { name: "n", type: "int", default: 1, help: "samples per prompt" },
  { name: "max-tokens", type: "int", default: 256, help: "maximum generated tokens per sample (EOS included)" },
  { name: "temperature", type: "number", default: 1, help: "sampling temperature; 0 is greedy" },
  { name: "top-p", type: "number", default: 1, help: "nucleus mass in (0, 1]" },
  { name: "top-k", type: "int", default: -1, help: "keep the k most likely tokens; -1 disables" },
  { name: "repetition-penalty", type: "number", default: 1, help: "only 1 (off) is supported" },
  { name: "seed", type: "int", metavar: "S", help: "rollout seed (sample i of prompt j uses deriveSeed(S, j, i)); fresh if omitted" },
  { name: "max-batch", type: "int", default: 16, help: "most sequences in one engine step" },
  { name: "mode", type: "string", default: "plain", metavar: "plain", help: "decoding mode" },
  { name: "out", type: "string", required: true, metavar: "OUT.jsonl", help: "one line per sample, written atomically at the end" },
  { name: "summary-json", type: "string", metavar: "FILE", help: "also write the summary as JSON" },
  { name: "threads", type: "int", help: "onnxruntime intra-op threads (default: all cores)" },
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
  if (a.mode !== "plain") throw new UsageError(`--mode ${a.mode} is not supported yet (supported: plain)`);
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
  const prompts = readPrompts(a.prompts as string);
  const modelDir = await resolveModel(a.model as string);

  fs.rmSync(out, { force: true }); // a failed run must not leave an old file that looks like its output
  const partial = `${out}.partial`;
  let tokenizer: PythonTokenizer | undefined;
  try {
    const needsText = prompts.some((p) => "text" in p);
    if (needsText || a.decode) tokenizer = await PythonTokenizer.load(modelDir);
    const texts = prompts.flatMap((p) => ("text" in p ? [p.text] : []));
    const encoded = texts.length > 0 ? await tokenizer!.encodeChat(texts) : [];
    let t = 0;
    const promptIds = prompts.map((p) => ("ids" in p ? p.ids : encoded[t++]));

    const engine = await OnnxEngine.load(modelDir, { threads: a.threads as number | undefined });
    const progress = new Progress("rollout", promptIds.length * n, !a.quiet);
    const { records, summary } = await runRollout(
      engine,
      { promptIds, n, maxTokens, params, seed, maxBatch },
      { onTokens: (k) => progress.addTokens(k), onSample: () => progress.complete() },
    );
    progress.finish();
    await engine.close();
    const texts2 = tokenizer ? await tokenizer.decode(records.map((r) => r.token_ids)) : records.map(() => null);
    const lines = records.map((r, i) =>
      JSON.stringify({
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
  process.stderr.write(
    `summary: engine=${s.engine} mode=${s.mode} samples=${s.samples} tokens=${s.generated_tokens} ` +
      `wall=${s.wall_s}s tokens/s=${s.tokens_per_s} steps=${s.engine_steps} ` +
      `mean_occupancy=${s.mean_batch_occupancy} peak_batch=${s.peak_batch} seed=${s.seed}\n`,
  );
}
