/**
 * `specactor bench-grpo`: the GRPO rollout benchmark (src/bench/grpo.ts) from the command line:
 * options, help, progress bars, a compact table on stdout and the report directory.
 */
import * as path from "node:path";
import { GRPO_DEFAULT_MODES, GRPO_MODE_HELP, type GrpoReport, checkGrpoInputs, parseDrafterList, parseGrpoModes, runGrpoBench } from "../bench/grpo";
import { SPECACTOR_DRAFTERS } from "../rollout/modes";
import { BUILTIN_PROMPT_SETS } from "../rollout/prompts";
import { freshSeed } from "../sampling/seeds";
import { type OptSpec, helpText, parseArgs, usage } from "./args";
import { Progress } from "./progress";

/** What --quick sets, unless the option is given. */
const QUICK = { prompts: "gsm8k:8", n: 2, "max-tokens": 64, epochs: 2 };
const FULL = { prompts: "gsm8k:32", n: 4, "max-tokens": 512, epochs: 2 };

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "prompts", type: "string", metavar: "SET:N[:SEED]|FILE", help: `prompts: ${BUILTIN_PROMPT_SETS.map((s) => s.spec).join(", ")} or a JSONL file (default: ${FULL.prompts}; --quick: ${QUICK.prompts})` },
  { name: "n", type: "int", help: `samples per prompt, the GRPO group size (default: ${FULL.n}; --quick: ${QUICK.n})` },
  { name: "max-tokens", type: "int", help: `maximum generated tokens per sample (default: ${FULL["max-tokens"]}; --quick: ${QUICK["max-tokens"]})` },
  { name: "epochs", type: "int", help: `epochs (RL steps) per mode (default: ${FULL.epochs}; --quick: ${QUICK.epochs})` },
  { name: "drift", type: "number", default: 0.01, metavar: "SCALE", help: "relative weight perturbation per epoch (the policy moving between steps)" },
  { name: "temperature", type: "number", default: 1, help: "sampling temperature" },
  { name: "top-p", type: "number", default: 1, help: "nucleus mass" },
  { name: "top-k", type: "int", default: -1, help: "top-k; -1 or 0 disables" },
  { name: "modes", type: "string", default: GRPO_DEFAULT_MODES.join(","), metavar: "LIST", help: "modes, comma-separated (see below); plain always runs, first" },
  { name: "drafters", type: "string", default: SPECACTOR_DRAFTERS.join(","), metavar: "LIST", help: "the drafters of the specactor modes that do not name theirs" },
  { name: "draft-len", type: "int", default: 4, metavar: "K", help: "draft length of vanilla and of the fixed and batch-table ablations" },
  { name: "seed", type: "int", metavar: "S", help: "rollout seed (fresh if omitted; printed)" },
  { name: "fresh", type: "flag", help: "new prompts every epoch: a built-in set NAME:N[:SEED] runs NAME:N:SEED+1000e in epoch e (an error with a file)" },
  { name: "quick", type: "flag", help: `a small setting for iteration: ${QUICK.prompts} prompts, n=${QUICK.n}, ${QUICK["max-tokens"]} tokens, ${QUICK.epochs} epochs (each unless given)` },
  { name: "out", type: "string", metavar: "DIR", help: "report directory (default: .cache/bench/grpo-<timestamp> under the current directory)" },
  { name: "threads", type: "int", help: "onnxruntime threads (default: all cores)" },
  { name: "quiet", type: "flag", help: "no progress bars" },
];

const SUMMARY = `The GRPO rollout benchmark: every mode rolls out the same prompts x n samples x epochs with the same
seeds, every sample admitted at once (max batch = prompts x n), and is measured on what a GRPO step
waits for: each epoch's makespan. Per mode and epoch: makespan, speed-up over plain, tokens/s, exact
samples vs plain, divergences, accepted tokens per verify step per drafter; for specactor modes the
cost model's predicted vs measured step times and its predicted speed-up next to the measured one;
for edit and mix prompts the share of edit response tokens copied from the prompt.

Writes DIR/report.json, DIR/report.md and PNGs (batch-eE.png, throughput-eE.png per epoch,
makespan.png, speedup.png, accepted.png, cost-model.png); prints a table and DIR.

modes:
${GRPO_MODE_HELP.map(([k, v]) => `  ${k.padEnd(28)} ${v}`).join("\n")}
default: ${GRPO_DEFAULT_MODES.join(",")}`;

export async function benchGrpoCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(helpText("specactor bench-grpo [--model smollm2|tiny|DIR] [--prompts gsm8k:32] [--modes LIST] [--quick] [options]", SUMMARY, OPTIONS));
    return;
  }
  const a = parseArgs(argv, OPTIONS);
  const size = a.quick ? QUICK : FULL;
  const prompts = (a.prompts as string | undefined) ?? size.prompts;
  const drafters = usage(() => parseDrafterList(a.drafters as string));
  const modes = usage(() => parseGrpoModes(a.modes as string, drafters)); // also checked by runGrpoBench; here for a usage error
  const seed = (a.seed as number | undefined) ?? freshSeed();
  const outDir = (a.out as string | undefined) ?? path.join(".cache", "bench", `grpo-${timestamp()}`);
  const settings = {
    model: a.model as string,
    prompts,
    n: (a.n as number | undefined) ?? size.n,
    maxTokens: (a["max-tokens"] as number | undefined) ?? size["max-tokens"],
    epochs: (a.epochs as number | undefined) ?? size.epochs,
    drift: a.drift as number,
    temperature: a.temperature as number,
    topP: a["top-p"] as number,
    topK: a["top-k"] as number,
    seed,
    fresh: Boolean(a.fresh),
    modes: modes.map((m) => m.label),
    ...(a.drafters !== SPECACTOR_DRAFTERS.join(",") ? { drafters } : {}),
    ...(a["draft-len"] !== 4 ? { draftLen: a["draft-len"] as number } : {}),
    threads: a.threads as number | undefined,
  };
  usage(() => checkGrpoInputs(settings)); // bad input fails before any model work (and before the settings line)
  const out = (s: string) => process.stdout.write(s + "\n");
  out(
    `bench-grpo: ${prompts}${settings.fresh ? " (fresh every epoch)" : ""} x n=${settings.n}, max ${settings.maxTokens} tokens, ${settings.epochs} epoch(s), drift ${settings.drift}, ` +
      `T=${settings.temperature} top-p=${settings.topP} top-k=${settings.topK}, modes ${settings.modes.join(",")}, seed ${seed}`,
  );
  const report = await runGrpoBench({
    ...settings,
    outDir,
    onMode: (label, samples) => (a.quiet ? undefined : new Progress(label, samples, true)),
  });
  out(table(report));
  out(`\nreport: ${path.join(outDir, "report.md")}`);
  out(outDir);
}

/** The compact table: per epoch, every mode; then the specactor predictions. */
export function table(r: GrpoReport): string {
  const L: string[] = [];
  const epochs = r.modes[0].epochs.length;
  const w = Math.max(13, ...r.modes.map((m) => m.mode.length));
  for (let e = 0; e < epochs; e++) {
    L.push(`\nepoch ${e}`);
    L.push(`  ${"mode".padEnd(w)} ${"makespan".padStart(9)} ${"speed-up".padStart(9)} ${"tok/s".padStart(8)} ${"acc/step".padStart(9)} ${"exact".padStart(9)} ${"diverge".padStart(8)}`);
    for (const m of r.modes) {
      const x = m.epochs[e];
      const acc = x.accepted_per_verify_step ? (x.accepted_per_verify_step.all ?? Object.values(x.accepted_per_verify_step)[0]) : undefined;
      L.push(
        `  ${m.mode.padEnd(w)} ${(x.makespan_s.toFixed(2) + "s").padStart(9)} ${(x.speedup.toFixed(2) + "x").padStart(9)} ${x.tokens_per_s.toFixed(1).padStart(8)} ` +
          `${(acc !== undefined && Number.isFinite(acc) ? acc.toFixed(2) : "-").padStart(9)} ${`${x.exact_samples}/${x.samples}`.padStart(9)} ${String(x.divergences).padStart(8)}`,
      );
    }
  }
  const spec = r.modes.filter((m) => m.specactor);
  if (spec.length > 0) {
    L.push(`\nspecactor (last epoch): predicted vs measured speed-up, cost-model error`);
    for (const m of spec) {
      const x = m.specactor!;
      const f = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}x` : "-");
      L.push(`  ${m.mode.padEnd(w)} predicted ${f(x.predicted_speedup).padStart(6)}  measured ${f(x.measured_speedup).padStart(6)}  error ${Number.isFinite(x.cost_model_error) ? (100 * x.cost_model_error).toFixed(1) + "%" : "-"}`);
    }
  }
  if (r.copy_share) L.push(`\ncopy share of edit responses (plain, n=${r.copy_share.n}): ${(100 * r.copy_share.overall).toFixed(1)}%`);
  return L.join("\n");
}

function timestamp(): string {
  const d = new Date();
  const p = (x: number) => String(x).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}
