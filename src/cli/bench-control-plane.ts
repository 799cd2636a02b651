/** `specactor bench-control-plane`: see src/bench/control-plane.ts. */
import * as fs from "node:fs";
import { type ControlPlaneDrafter, benchControlPlane, type ControlPlaneRow } from "../bench/control-plane";
import { DRAFTERS } from "../drafters/registry";
import { type OptSpec, UsageError, helpText, parseArgs } from "./args";

const OPTIONS: OptSpec[] = [
  { name: "active", type: "string", default: "64,256", metavar: "LIST", help: "active sequences (the batch)" },
  { name: "drafters", type: "string", default: "none,ngram,suffix,specactor", metavar: "LIST", help: "none and/or drafters proposing every step; specactor: every model-free drafter merged under the policy" },
  { name: "steps", type: "int", default: 200, help: "tokens per request (engine steps per run)" },
  { name: "clients", type: "int", default: 8, help: "clients the requests are spread over (one outputs message per client per step)" },
  { name: "json", type: "string", metavar: "FILE", help: "write the rows as JSON" },
];

export async function benchControlPlaneCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(
      helpText(
        "specactor bench-control-plane [--active 64,256]",
        "What the control plane costs per engine step with an engine that does no model work: the rollout\ncore, the drafter, output coalescing and msgpack encoding (every request streams). Targets at 256 active\nsequences: <= 1 ms per step for one drafter, <= 5 ms with specactor's merged drafters.",
        OPTIONS,
      ),
    );
    return;
  }
  const a = parseArgs(argv, OPTIONS);
  const active = (a.active as string).split(",").map(Number);
  if (active.some((x) => !Number.isInteger(x) || x < 1)) throw new UsageError(`--active: expected integers >= 1, got '${a.active}'`);
  const drafters = (a.drafters as string).split(",");
  for (const d of drafters) if (d !== "none" && d !== "specactor" && !(DRAFTERS as readonly string[]).includes(d)) throw new UsageError(`unknown drafter '${d}' (none, specactor, ${DRAFTERS.join(", ")})`);
  if (drafters.includes("model")) throw new UsageError("the model drafter runs a model; it is not control plane");
  const rows: ControlPlaneRow[] = [];
  process.stdout.write("active  drafter    clients  steps  ms/step  us/seq-step  bytes/step\n");
  for (const n of active) {
    for (const d of drafters) {
      const r = await benchControlPlane(n, d === "none" ? undefined : (d as ControlPlaneDrafter), { steps: a.steps as number, clients: a.clients as number });
      rows.push(r);
      process.stdout.write(
        `${String(r.active).padStart(6)}  ${r.drafter.padEnd(9)}  ${String(r.clients).padStart(7)}  ${String(r.steps).padStart(5)}  ${r.ms_per_step.toFixed(3).padStart(7)}  ${r.us_per_seq_step.toFixed(2).padStart(11)}  ${String(r.bytes_per_step).padStart(10)}\n`,
      );
    }
  }
  if (a.json) fs.writeFileSync(a.json as string, JSON.stringify(rows, null, 1) + "\n");
}
