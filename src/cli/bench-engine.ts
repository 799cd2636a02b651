/** `specactor bench-engine`: see src/bench/engine-bench.ts. */
import * as fs from "node:fs";
import * as os from "node:os";
import { benchEngine } from "../bench/engine-bench";
import { resolveModel } from "../models/registry";
import { type OptSpec, UsageError, helpText, parseArgs } from "./args";

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "batches", type: "string", default: "1,4,16,64", metavar: "LIST", help: "batch sizes" },
  { name: "contexts", type: "string", default: "64,512,1024,2048", metavar: "LIST", help: "cached context lengths" },
  { name: "nodes", type: "string", default: "0,4,8", metavar: "LIST", help: "trie nodes per sequence (0 = decode step)" },
  { name: "steps", type: "int", default: 5, help: "timed steps per configuration (after one warm-up); the median is reported" },
  { name: "threads", type: "int", help: "onnxruntime and torch threads (default: all cores)" },
  { name: "no-transformers", type: "flag", help: "skip the transformers static-cache baseline" },
  { name: "json", type: "string", metavar: "FILE", help: "write the rows as JSON" },
];

function list(name: string, value: string, min: number): number[] {
  const xs = value.split(",").map((x) => Number(x.trim()));
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < min)) throw new UsageError(`--${name}: expected integers >= ${min}, got '${value}'`);
  return xs;
}

export async function benchEngineCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(
      helpText(
        "specactor bench-engine [--model smollm2] [--json FILE]",
        "Engine step cost (decode and trie verify) per batch and context, against the memory bound\nmeasured on this machine and against transformers' static-cache decoding on the same weights.",
        OPTIONS,
      ),
    );
    return;
  }
  const a = parseArgs(argv, OPTIONS);
  const threads = (a.threads as number | undefined) ?? os.cpus().length;
  const modelDir = await resolveModel(a.model as string);
  const { rows, bandwidth } = await benchEngine(modelDir, {
    batches: list("batches", a.batches as string, 1),
    contexts: list("contexts", a.contexts as string, 1),
    nodes: list("nodes", a.nodes as string, 0),
    steps: a.steps as number,
    transformers: !a["no-transformers"],
    threads,
    log: (line) => process.stdout.write(line + "\n"),
  });
  if (a.json) fs.writeFileSync(a.json as string, JSON.stringify({ bandwidth_gbps: bandwidth / 1e9, rows }, null, 1) + "\n");
}
