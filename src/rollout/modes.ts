/**
 * Rollout modes by name: what each builds for an epoch (the verifier engine and the speculation
 * config), and what it keeps across epochs (history drafters, SpecActor's cost model and lengths).
 *
 *   plain      no drafts.
 *   vanilla    one drafter (`--drafter`) and the verifier take turns on every core, fixed draft length.
 *   decoupled  the model drafter runs ahead on cores of its own while the verifier runs.
 *   specactor  several drafters (`--drafters`, Fastest-of-N) under the cost-model policy
 *              (src/scheduler/), the policy `--policy` (its ablations: const-price, fixed, batch-table).
 */
import * as os from "node:os";
import { AcceptanceTable } from "../drafters/acceptance-table";
import type { Drafter } from "../drafters/drafter";
import { DRAFTERS, type DraftCost, type DrafterName, drafterEntry, isDrafterName, makeDrafter } from "../drafters/registry";
import type { Engine } from "../engine/engine";
import { OnnxEngine } from "../engine/onnx-engine";
import { ThreadedEngine } from "../engine/threaded-engine";
import { StepCostModel, profileEngine } from "../scheduler/cost-model";
import { LengthPredictor } from "../scheduler/lengths";
import { SELECTORS } from "../scheduler/selectors";
import { SPECACTOR_DEFAULTS, SpecActorDrafter } from "../scheduler/specactor";
import type { SpecConfig } from "./core";

export const MODES = ["plain", "vanilla", "decoupled", "specactor"] as const;
export type Mode = (typeof MODES)[number];
/** SpecActor's default drafters: every method, merged per request. */
export const SPECACTOR_DRAFTERS: DrafterName[] = ["suffix", "ngram", "model"];
export const POLICIES = Object.keys(SELECTORS);

export interface SpeculationChoice {
  mode: Mode;
  /** vanilla and decoupled: the one drafter. */
  drafter?: DrafterName;
  /** specactor: the drafters merged per request. */
  drafters?: DrafterName[];
}

/** Checks `--mode`, `--drafter` and `--drafters` together; throws a message for the user. */
export function speculationOf(mode: string, drafter?: string, drafters?: string): SpeculationChoice {
  if (!(MODES as readonly string[]).includes(mode)) throw new Error(`--mode ${mode} is not supported (supported: ${MODES.join(", ")})`);
  const check = (d: string) => {
    if (!isDrafterName(d)) throw new Error(`unknown drafter '${d}' (known: ${DRAFTERS.join(", ")})`);
    return d;
  };
  if (drafters !== undefined && mode !== "specactor") throw new Error("--drafters needs --mode specactor (vanilla takes one --drafter)");
  switch (mode as Mode) {
    case "plain":
      if (drafter) throw new Error("--drafter needs --mode vanilla or decoupled");
      return { mode: "plain" };
    case "vanilla":
      if (!drafter) throw new Error(`--mode vanilla needs --drafter (${DRAFTERS.join(", ")})`);
      return { mode: "vanilla", drafter: check(drafter) };
    case "decoupled":
      if (drafter !== undefined && drafter !== "model") throw new Error(`--mode decoupled runs the model drafter, not '${drafter}'`);
      return { mode: "decoupled", drafter: "model" };
    case "specactor": {
      if (drafter) throw new Error("--mode specactor takes --drafters LIST, not --drafter");
      const list = drafters === undefined ? SPECACTOR_DRAFTERS : drafters.split(",").map((d) => check(d.trim()));
      if (list.length === 0) throw new Error("--drafters needs at least one drafter");
      if (new Set(list).size !== list.length) throw new Error(`--drafters ${drafters}: a drafter is named twice`);
      return { mode: "specactor", drafters: list };
    }
  }
}

export interface ModePlan {
  modelDir: string;
  draftLen: number;
  drafter?: DrafterName;
  drafters?: DrafterName[];
  drafterModel?: string;
  draftCost?: DraftCost;
  threads?: number;
  drafterThreads?: number;
  /** specactor: the selector (default cost). */
  policy?: string;
  /** specactor: weight drafts by predicted remaining length (default on). */
  makespan?: boolean;
  historyMaxPrompts?: number;
  historyMaxNodes?: number;
}

/** What lives across a rollout's epochs: history drafters and SpecActor's learnt costs and lengths. */
export class CrossEpoch {
  readonly kept = new Map<string, Drafter>();
  readonly lengths = new LengthPredictor();
  readonly cost = new StepCostModel("verifier");
  /** The model drafter's acceptance table: a new epoch's drafter starts from what the last one measured. */
  readonly acceptance = new AcceptanceTable();
  /** The last epoch's SpecActor drafter (its report feeds summaries and plots). */
  specactor?: SpecActorDrafter;

  /** A drafter by name: the kept instance for one that keeps history, else a fresh one. */
  async drafter(name: DrafterName, plan: ModePlan, own: { threads?: number; threaded?: boolean; decoupled?: boolean } = {}): Promise<Drafter> {
    const entry = drafterEntry(name);
    const existing = this.kept.get(name);
    if (entry.keepsHistory && existing) return existing;
    const d = await makeDrafter(name, { modelDir: plan.modelDir, drafterModel: plan.drafterModel, draftCost: plan.draftCost, threads: own.threads ?? plan.threads, threaded: own.threaded, decoupled: own.decoupled, acceptanceTable: this.acceptance, historyMaxPrompts: plan.historyMaxPrompts, historyMaxNodes: plan.historyMaxNodes });
    if (entry.keepsHistory) this.kept.set(name, d);
    return d;
  }

  /** Closes what an epoch made and does not keep. */
  async release(d: Drafter | undefined): Promise<void> {
    if (!d || [...this.kept.values()].includes(d)) return;
    if (d instanceof SpecActorDrafter) {
      for (const sub of d.drafters) await this.release(sub);
      return;
    }
    await d.close?.();
  }

  async close(): Promise<void> {
    for (const d of this.kept.values()) await d.close?.();
    this.kept.clear();
  }
}

export interface EpochSetup {
  engine: Engine;
  spec?: SpecConfig;
}

interface ModeEntry {
  setup(plan: ModePlan, epochModelDir: string, cross: CrossEpoch): Promise<EpochSetup>;
}

/** specactor verifies at most this many nodes per request per step (the selector usually takes far fewer). */
export const SPECACTOR_MAX_NODES = 32;

export const MODE_REGISTRY: Record<Mode, ModeEntry> = {
  plain: {
    setup: async (plan, dir) => ({ engine: await OnnxEngine.load(dir, { threads: plan.threads }) }),
  },
  vanilla: {
    setup: async (plan, dir, cross) => {
      const engine = await OnnxEngine.load(dir, { threads: plan.threads });
      return { engine, spec: { drafter: await cross.drafter(plan.drafter!, { ...plan, modelDir: dir }), draftLen: plan.draftLen } };
    },
  },
  decoupled: {
    setup: async (plan, dir, cross) => {
      // the verifier steps off the main thread, so the drafter's loop runs while it verifies
      const split = threadSplit(plan.threads, plan.drafterThreads);
      const engine = await ThreadedEngine.load(dir, { threads: split.verifier });
      const drafter = await cross.drafter("model", { ...plan, modelDir: dir }, { threads: split.drafter, threaded: true, decoupled: true });
      return { engine, spec: { drafter, draftLen: plan.draftLen } };
    },
  },
  specactor: {
    setup: async (plan, dir, cross) => {
      const engine = await OnnxEngine.load(dir, { threads: plan.threads });
      // the first epoch profiles the engine; later epochs refine the same fit (the machine is the same)
      if (!cross.cost.ready) await profileEngine(engine, cross.cost);
      const drafters: Drafter[] = [];
      for (const name of plan.drafters ?? SPECACTOR_DRAFTERS) drafters.push(await cross.drafter(name, { ...plan, modelDir: dir }));
      const drafter = new SpecActorDrafter(drafters, { policy: plan.policy ?? SPECACTOR_DEFAULTS.policy, makespan: plan.makespan ?? true, draftLen: plan.draftLen }, cross.lengths, cross.cost);
      cross.specactor = drafter;
      return { engine, spec: { drafter, draftLen: SPECACTOR_DEFAULTS.maxDepth, maxNodes: SPECACTOR_MAX_NODES } };
    },
  },
};

/** Decoupled mode's cores: the drafter's (default 1) and the verifier's (the rest of `threads`, default all cores, at least 1). */
export function threadSplit(threads: number | undefined, drafterThreads: number | undefined): { verifier: number; drafter: number } {
  const total = threads ?? os.cpus().length;
  const drafter = drafterThreads ?? 1;
  if (!Number.isInteger(drafter) || drafter < 1) throw new Error(`drafter threads must be an integer >= 1, got ${drafterThreads}`);
  return { verifier: Math.max(1, total - drafter), drafter };
}
