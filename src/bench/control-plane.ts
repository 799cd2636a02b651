/**
 * The control plane's own cost per engine step: the rollout core, the drafter and the service
 * (coalescing and msgpack encoding of every output) over the null engine, which does no model work.
 * Every request streams, the worst case: each step encodes one outputs message per client.
 */
import { encode } from "../bridge/wire";
import { NullEngine } from "../engine/null-engine";
import { RolloutCore } from "../rollout/core";
import type { Drafter } from "../drafters/drafter";
import { type DrafterName, makeDrafter } from "../drafters/registry";
import { SpecActorDrafter } from "../scheduler/specactor";
import { RolloutService } from "../server/service";

export interface ControlPlaneRow {
  active: number;
  drafter: string;
  clients: number;
  steps: number;
  ms_per_step: number;
  us_per_seq_step: number;
  bytes_per_step: number;
}

/** "specactor": every model-free drafter merged under the policy (its cost model learns the null engine's near-zero costs, so it verifies every candidate: the worst case). */
export type ControlPlaneDrafter = Exclude<DrafterName, "model"> | "specactor";

async function drafterFor(name: ControlPlaneDrafter): Promise<Drafter> {
  if (name === "specactor") return new SpecActorDrafter([await makeDrafter("suffix", { modelDir: "" }), await makeDrafter("ngram", { modelDir: "" })]);
  return makeDrafter(name, { modelDir: "" });
}

export async function benchControlPlane(active: number, drafter: ControlPlaneDrafter | undefined, opts: { steps: number; clients: number }): Promise<ControlPlaneRow> {
  const engine = new NullEngine();
  const d = drafter ? await drafterFor(drafter) : undefined;
  const core = new RolloutCore(engine, active, d ? { drafter: d, draftLen: 4, ...(drafter === "specactor" ? { draftLen: 8, maxNodes: 32 } : {}) } : undefined);
  let bytes = 0;
  const service = new RolloutService(core, engine, (_client, type, body, arrays) => {
    for (const f of encode(type, body, arrays)) bytes += f.length;
  }, { heartbeatIntervalS: 1, clientTimeoutS: 10, maxMessageBytes: 1 << 30, server: "bench" });
  const perClient = Math.ceil(active / opts.clients);
  const prompt = Int32Array.from({ length: 64 }, (_, i) => 100 + i);
  const t0 = performance.now();
  for (let c = 0; c < opts.clients; c++) {
    const k = Math.min(perClient, active - c * perClient);
    if (k <= 0) break;
    const flat = new Int32Array(prompt.length * k);
    for (let i = 0; i < k; i++) flat.set(prompt, i * prompt.length);
    service.handle(`client${c}`, {
      type: "generate",
      body: { id: "r", prompt_ids: flat, prompt_lengths: Array(k).fill(prompt.length), n: 1, max_tokens: opts.steps, seed: c, stream: true },
    });
  }
  await new Promise<void>((resolve) => {
    const poll = () => (service.inFlight === 0 ? resolve() : setTimeout(poll, 1));
    poll();
  });
  const wall = performance.now() - t0;
  await d?.close?.();
  const steps = core.stats.engineSteps;
  return {
    active,
    drafter: drafter ?? "none",
    clients: opts.clients,
    steps,
    ms_per_step: round(wall / steps, 4),
    us_per_seq_step: round((wall * 1000) / core.stats.seqSteps, 3),
    bytes_per_step: Math.round(bytes / steps),
  };
}

function round(x: number, d: number): number {
  return Math.round(x * 10 ** d) / 10 ** d;
}
