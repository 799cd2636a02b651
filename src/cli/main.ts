/** The `specactor` command line. Errors are one line on stderr and a non-zero exit. */
import { MODEL_NAMES, isModelName, prepareModel } from "../models/registry";
import { BUILTIN_PROMPT_SETS, builtinPrompts, isBuiltinPromptSet } from "../rollout/prompts";
import { type OptSpec, UsageError, helpText, parseArgs } from "./args";
import { rolloutCommand } from "./rollout";
import { benchEngineCommand } from "./bench-engine";
import { compareCommand } from "./compare";
import { serveCommand } from "./serve";
import { benchControlPlaneCommand } from "./bench-control-plane";
import { benchGrpoCommand } from "./bench-grpo";

const COMMANDS = `usage: specactor <command> [options]

commands:
  prepare-model smollm2|tiny   convert and cache a model; prints its directory as the last line
  rollout                      generate samples for a prompt file (see rollout --help)
  prompts                      print the built-in GSM8K-style prompt set as JSONL
  compare                      plain vs speculative rollouts side by side: speed-up, acceptance, exactness
  bench-engine                 engine step cost vs the memory bound and transformers (see --help)
  bench-control-plane          the control plane's own cost per engine step (null engine)
  bench-grpo                   GRPO rollout benchmark: makespan per mode vs plain, report and plots (see --help)
  serve                        the rollout server: ZeroMQ/msgpack, bridge/PROTOCOL.md (see serve --help)

Run \`specactor <command> --help\` for a command's options.
`;

async function prepareCommand(argv: string[]): Promise<void> {
  const name = argv[0];
  if (!name || name === "--help") {
    process.stdout.write(`usage: specactor prepare-model ${MODEL_NAMES.join("|")}\n\nConverts the model (first run only) and prints the prepared directory, which holds hf/ and onnx/.\n`);
    return;
  }
  if (!isModelName(name)) throw new UsageError(`unknown model '${name}' (known: ${MODEL_NAMES.join(", ")})`);
  if (argv.length > 1) throw new UsageError(`unexpected argument '${argv[1]}'`);
  process.stdout.write(`${await prepareModel(name)}\n`);
}

const PROMPT_OPTIONS: OptSpec[] = [
  { name: "set", type: "string", default: "gsm8k", metavar: BUILTIN_PROMPT_SETS.map((s) => s.name).join("|"), help: "which built-in set" },
  { name: "count", type: "int", default: 32, help: "number of prompts" },
  { name: "seed", type: "int", default: 0, help: "generator seed" },
];

function promptsCommand(argv: string[]): void {
  if (argv.includes("--help")) {
    const sets = BUILTIN_PROMPT_SETS.map((s) => `  ${s.name.padEnd(28)} ${s.summary}`).join("\n");
    const summary = `Deterministic built-in prompts, one {"prompt"} per line; the same set is --prompts ${BUILTIN_PROMPT_SETS.map((s) => s.spec).join(" | ")}.\n\nsets:\n${sets}`;
    process.stdout.write(helpText("specactor prompts [--set gsm8k|edit|mix] [--count N] [--seed S]", summary, PROMPT_OPTIONS));
    return;
  }
  const a = parseArgs(argv, PROMPT_OPTIONS);
  const set = a.set as string;
  if (!isBuiltinPromptSet(set)) throw new UsageError(`--set: unknown prompt set '${set}' (known: ${BUILTIN_PROMPT_SETS.map((s) => s.name).join(", ")})`);
  for (const p of builtinPrompts(set, a.count as number, a.seed as number)) process.stdout.write(JSON.stringify({ prompt: p }) + "\n");
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "prepare-model":
        return await prepareCommand(rest);
      case "rollout":
        return await rolloutCommand(rest);
      case "prompts":
        return promptsCommand(rest);
      case "compare":
        return await compareCommand(rest);
      case "bench-engine":
        return await benchEngineCommand(rest);
      case "bench-control-plane":
        return await benchControlPlaneCommand(rest);
      case "bench-grpo":
        return await benchGrpoCommand(rest);
      case "serve":
        return await serveCommand(rest);
      case undefined:
      case "--help":
      case "help":
        process.stdout.write(COMMANDS);
        return;
      default:
        throw new UsageError(`unknown command '${cmd}' (commands: prepare-model, rollout, compare, prompts, bench-engine, bench-control-plane, bench-grpo, serve)`);
    }
  } catch (e) {
    process.stderr.write(`specactor: error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.SPECACTOR_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exitCode = 2;
  }
}

if (require.main === module) void main();
