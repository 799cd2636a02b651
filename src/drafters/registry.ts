/**
 * Drafters by name. Each entry says what it needs (a model to load, history kept across epochs), so
 * callers ask the entry instead of testing names.
 */
import { OnnxEngine } from "../engine/onnx-engine";
import { ThreadedEngine } from "../engine/threaded-engine";
import { drafterDir } from "../models/registry";
import type { AcceptanceTable } from "./acceptance-table";
import type { Engine } from "../engine/engine";
import type { Drafter } from "./drafter";
import type { ModelDrafterOptions } from "./model";
import { CoupledModelDrafter } from "./model-coupled";
import { DecoupledModelDrafter } from "./model-decoupled";
import { NgramDrafter } from "./ngram";
import { SuffixDrafter } from "./suffix";

/**
 * How the model drafter weighs a drafted token's chance of acceptance against its cost
 * (`src/drafters/model.ts`): "auto" times the drafter and verifier steps, a number fixes the ratio of
 * their costs, "off" drafts while the drafter's own confidence stays above 5% (the draft length is
 * then nearly fixed).
 */
export type DraftCost = "auto" | "off" | number;

export interface DrafterContext {
  /** The verifier's prepared model directory (the model drafter loads a drafter of it). */
  modelDir: string;
  /** The model drafter: a drafter name of the model (q8, layers8) or a prepared directory. */
  drafterModel?: string;
  draftCost?: DraftCost;
  threads?: number;
  /** The drafter engine on its own thread (a server, decoupled mode). */
  threaded?: boolean;
  /** Draft ahead while the verifier runs (they overlap where both engines step off the main thread). */
  decoupled?: boolean;
  /** The model drafter's acceptance table, shared across a rollout's epochs (each epoch loads its own drafter model). */
  acceptanceTable?: AcceptanceTable;
  /** The suffix drafter's history store bounds. */
  historyMaxPrompts?: number;
  historyMaxNodes?: number;
}

export interface DrafterEntry {
  help: string;
  /** Loads a model of its own (needs the model's drafter directory; costs memory and start-up). */
  loadsModel: boolean;
  /** Learns from finished requests: one instance should live across epochs (history drafting). */
  keepsHistory: boolean;
  make(ctx: DrafterContext): Promise<Drafter>;
}

export const DRAFTER_REGISTRY = {
  ngram: {
    help: "prompt lookup: continues the latest earlier occurrence of the last n tokens",
    loadsModel: false,
    keepsHistory: false,
    make: async () => new NgramDrafter(),
  },
  suffix: {
    help: "suffix trees over the request, its GRPO siblings and earlier epochs (SuffixDecoding)",
    loadsModel: false,
    keepsHistory: true,
    make: async (ctx) => new SuffixDrafter({ historyMaxPrompts: ctx.historyMaxPrompts, historyMaxNodes: ctx.historyMaxNodes }),
  },
  model: {
    help: "a cheaper copy of the policy (8-bit by default) decoding with the request's own noise",
    loadsModel: true,
    keepsHistory: false,
    make: async (ctx) => {
      const dir = drafterDir(ctx.modelDir, ctx.drafterModel);
      const load = ctx.threaded ? ThreadedEngine.load : OnnxEngine.load;
      return makeModelDrafter(await load(dir, { threads: ctx.threads }), { ...modelDrafterOptions(ctx.draftCost), decoupled: ctx.decoupled ?? false, table: ctx.acceptanceTable });
    },
  },
} satisfies Record<string, DrafterEntry>;

export type DrafterName = keyof typeof DRAFTER_REGISTRY;
export const DRAFTERS = Object.keys(DRAFTER_REGISTRY) as DrafterName[];

export function isDrafterName(name: string): name is DrafterName {
  return Object.hasOwn(DRAFTER_REGISTRY, name);
}

export function drafterEntry(name: string): DrafterEntry {
  if (!isDrafterName(name)) throw new Error(`unknown drafter '${name}' (known: ${DRAFTERS.join(", ")})`);
  return DRAFTER_REGISTRY[name];
}

/** A fresh drafter by name. */
export function makeDrafter(name: string, ctx: DrafterContext): Promise<Drafter> {
  return drafterEntry(name).make(ctx);
}

/** The model drafter `opts.decoupled` asks for, on `engine`, reading and updating `opts.table` (default a fresh one). */
export function makeModelDrafter(
  engine: Engine,
  opts: Partial<ModelDrafterOptions> & {
    /**
     * Draft ahead while the verifier runs (`DecoupledModelDrafter`). The two overlap only where both
     * engines step off the main thread (`ThreadedEngine`, workers); otherwise the pump runs between
     * verifier steps, and the output is the same.
     */
    decoupled: boolean;
    table?: AcceptanceTable;
  },
): CoupledModelDrafter | DecoupledModelDrafter {
  const { decoupled, table, ...rest } = opts;
  return decoupled ? new DecoupledModelDrafter(engine, rest, table) : new CoupledModelDrafter(engine, rest, table);
}

/** Parses `--draft-cost`; throws a message for the user on anything else. */
export function parseDraftCost(s: string): DraftCost {
  if (s === "auto" || s === "off") return s;
  const x = Number(s);
  if (s.trim() === "" || !Number.isFinite(x) || x < 0) throw new Error(`--draft-cost must be auto, off or a number >= 0, got '${s}'`);
  return x;
}

export function modelDrafterOptions(cost: DraftCost = "auto"): Partial<ModelDrafterOptions> {
  if (cost === "off") return { costAware: false };
  return cost === "auto" ? { costAware: true } : { costAware: true, cost };
}
