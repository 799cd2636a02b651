/**
 * The GRPO rollout benchmark (`specactor bench-grpo`): every mode rolls out the same prompts x n
 * samples x epochs with the same seeds, every sample admitted at once (max batch = prompts x n, as a
 * GRPO step hands the whole group to the rollout), and the benchmark measures what a GRPO step
 * waits for: each epoch's makespan, against plain decoding's.
 *
 * Modes (`GRPO_MODE_HELP`):
 *
 *   plain                     no drafts; exactness and speed-ups are measured against it (run first)
 *   suffix | ngram | model    vanilla speculation with that one drafter
 *   decoupled                 the model drafter running ahead on a core of its own
 *   specactor                 the default drafters merged under the cost-model policy
 *   specactor[a+b]            specactor with only drafters a and b (an ablation of Fastest-of-N)
 *   specactor:POLICY          another selector (fixed, batch-table, const-price)
 *   specactor:nomakespan      makespan weighting off (drafts weighted by tokens/s only)
 *   specactor[a+b]:VARIANT    both at once
 *
 * Figures per mode and epoch (report.json `modes[].epochs[]`):
 *
 *   makespan_s    the epoch's wall time (first request submitted to last sample finished)
 *   speedup       plain's makespan / the mode's makespan
 *   tokens_per_s  generated tokens / makespan
 *   exact         samples equal to plain's token for token (src/cli/compare.ts `exactness`)
 *   batch         the live batch over time: (t_s, sequences) after every engine step, t from the
 *                 epoch's start, estimated as (the last step's time - the epoch's wall time), so the
 *                 first point comes after the first (prefill) step; the series starts at (0, first
 *                 step's batch) and ends at (makespan, 0)
 *   throughput    generated tokens per second in bins of `throughput_bin_s`, the same for every
 *                 mode of an epoch: 1 s when plain's epoch lasts 20 s or more, else a twentieth of
 *                 it (so a short run still gets a curve); a step's tokens count at the step's end
 *   accepted per verify step, per drafter:
 *       vanilla     the drafter summary's accepted tokens / verify steps (its
 *                   mean_accepted_per_verify_step): accepted draft tokens per sequence-step that
 *                   carried a draft; NaN (JSON null, "-") when no step carried one
 *       specactor   NAME.accepted (the verified nodes on the accepted path that drafter proposed;
 *                   a node proposed by several drafters counts for each) / the sequence-steps that
 *                   carried a draft, the same unit as vanilla's; `all` is every accepted draft token
 *                   over the same steps. report.json also keeps NAME.accepted / drafting_steps
 *                   (batch steps the policy drafted on) as `accepted_per_drafting_step`.
 *   predicted speed-up (specactor modes): the time-weighted mean of the policy's per-step predicted
 *                 gain over plain, sum(predicted_ms * predicted_gain) / sum(predicted_ms), over the
 *                 last epoch's decode steps (the rollout reports the last epoch's decisions), next to
 *                 the last epoch's measured speed-up (which also pays the prefill and drafting)
 *   cost model    the step-cost model's predicted vs measured step times (its last samples, every
 *                 epoch: the model lives across epochs) and its mean relative error
 *
 * Prompts: a built-in set NAME:N[:SEED] or a JSONL file. `fresh` gives every epoch new prompts (GRPO
 * seldom repeats a prompt soon): epoch e runs NAME:N:(SEED + 1000 e), so epoch 0 is the set itself;
 * a file has one set of prompts, so `fresh` with a file is an error. For `edit` and `mix` sets the
 * report states the share of edit response tokens copied from the prompt (src/data/copy-share.ts,
 * n = 4) over plain's samples of the edit prompts (mix: the odd prompt indices, src/data/edit.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { exactness } from "../cli/compare";
import { loadPromptIds } from "../cli/prompt-input";
import { copiedShare } from "../data/copy-share";
import { DRAFTERS, type DrafterName, isDrafterName } from "../drafters/registry";
import { resolveModel } from "../models/registry";
import { barChart, lineChart, scatterChart, type XYSeries } from "../plot/chart";
import { POLICIES, SPECACTOR_DRAFTERS, type Mode } from "../rollout/modes";
import { type BuiltinPromptSet, type PromptInput, readPrompts } from "../rollout/prompts";
import { type RolloutPlan, type RolloutSummary, type SampleRecord, runRollout } from "../rollout/run";
import { validateParams } from "../sampling/sampler";

export const GRPO_DEFAULT_MODES = [
  "plain",
  "suffix",
  "ngram",
  "model",
  "specactor",
  "specactor[suffix]",
  "specactor:fixed",
  "specactor:batch-table",
  "specactor:const-price",
  "specactor:nomakespan",
];

/** One line per mode form, for --help. */
export const GRPO_MODE_HELP: readonly [string, string][] = [
  ["plain", "no drafts: the baseline of every speed-up and exactness figure (always run, first)"],
  [DRAFTERS.join(" | "), "vanilla speculation with that one drafter"],
  ["decoupled", "the model drafter running ahead on a core of its own"],
  ["specactor", "the specactor drafters (--drafters) merged under the cost-model policy"],
  ["specactor[a+b]", "specactor with only the drafters named (any subset, e.g. specactor[suffix])"],
  ["specactor:POLICY", `specactor under another selector, an ablation (${POLICIES.filter((p) => p !== "cost").join(", ")})`],
  ["specactor:nomakespan", "specactor without makespan weighting (drafts weighted by tokens/s only)"],
  ["specactor[a+b]:VARIANT", "a drafter subset under a policy or nomakespan"],
];

/** A mode of the benchmark: its label and what it runs. */
export interface GrpoMode {
  label: string;
  mode: Mode;
  /** vanilla / decoupled: the one drafter. */
  drafter?: DrafterName;
  /** specactor: the drafters merged, the policy, makespan weighting. */
  drafters?: DrafterName[];
  policy?: string;
  makespan?: boolean;
}

/** Parses one mode label; throws a message for the user. */
export function parseGrpoMode(label: string, specDrafters: readonly DrafterName[] = SPECACTOR_DRAFTERS): GrpoMode {
  const forms = `plain, ${DRAFTERS.join(", ")}, decoupled, specactor, specactor[a+b], specactor:POLICY (${POLICIES.join(", ")}), specactor:nomakespan`;
  if (label === "plain") return { label, mode: "plain" };
  if (label === "decoupled") return { label, mode: "decoupled", drafter: "model" };
  if (isDrafterName(label)) return { label, mode: "vanilla", drafter: label };
  const m = /^specactor(?:\[([^\]]*)\])?(?::(.*))?$/.exec(label);
  if (!m) throw new Error(`unknown mode '${label}' (modes: ${forms})`);
  let drafters = [...specDrafters];
  if (m[1] !== undefined) {
    const names = m[1].split("+").map((d) => d.trim());
    if (names.some((d) => d === "")) throw new Error(`mode '${label}': name the drafters inside [], joined by + (e.g. specactor[suffix+ngram])`);
    for (const d of names) if (!isDrafterName(d)) throw new Error(`mode '${label}': unknown drafter '${d}' (known: ${DRAFTERS.join(", ")})`);
    if (new Set(names).size !== names.length) throw new Error(`mode '${label}': a drafter is named twice`);
    drafters = names as DrafterName[];
  }
  let policy = "cost";
  let makespan = true;
  if (m[2] !== undefined) {
    if (m[2] === "nomakespan") makespan = false;
    else if (POLICIES.includes(m[2])) policy = m[2];
    else throw new Error(`mode '${label}': unknown variant '${m[2]}' (a policy: ${POLICIES.join(", ")}; or nomakespan)`);
  }
  return { label, mode: "specactor", drafters, policy, makespan };
}

/** Parses the mode list: plain is put first (added when missing); duplicates and unknown names are errors. */
export function parseGrpoModes(list: string | readonly string[], specDrafters: readonly DrafterName[] = SPECACTOR_DRAFTERS): GrpoMode[] {
  const labels = (typeof list === "string" ? list.split(",") : [...list]).map((m) => m.trim()).filter((m) => m !== "");
  if (labels.length === 0) throw new Error("--modes: no modes given");
  const seen = new Set<string>();
  for (const l of labels) {
    if (seen.has(l)) throw new Error(`--modes: '${l}' is named twice`);
    seen.add(l);
  }
  const modes = labels.map((l) => parseGrpoMode(l, specDrafters));
  const rest = modes.filter((m) => m.mode !== "plain");
  return [{ label: "plain", mode: "plain" }, ...rest];
}

/** Parses a drafter list (`suffix,ngram`) for the specactor modes. */
export function parseDrafterList(list: string): DrafterName[] {
  const names = list.split(/[,+]/).map((d) => d.trim()).filter((d) => d !== "");
  if (names.length === 0) throw new Error("--drafters needs at least one drafter");
  for (const d of names) if (!isDrafterName(d)) throw new Error(`--drafters: unknown drafter '${d}' (known: ${DRAFTERS.join(", ")})`);
  if (new Set(names).size !== names.length) throw new Error(`--drafters ${list}: a drafter is named twice`);
  return names as DrafterName[];
}

const BUILTIN = /^(gsm8k|edit|mix):(\d+)(?::(\d+))?$/;

export interface GrpoPrompts {
  /** The prompt spec each epoch runs (a file: the same path every epoch). */
  specs: string[];
  perEpoch: PromptInput[][];
  set?: BuiltinPromptSet;
}

/** Every epoch's prompts; `fresh`: epoch e runs NAME:N:(SEED + 1000 e). Reads (and checks) a file. */
export function grpoPrompts(spec: string, epochs: number, fresh: boolean): GrpoPrompts {
  const b = BUILTIN.exec(spec);
  if (fresh && !b) {
    throw new Error(`--fresh needs a built-in prompt set (gsm8k:N[:SEED], edit:N[:SEED], mix:N[:SEED]) to draw new prompts from; '${spec}' is a file, one set of prompts`);
  }
  if (b && Number(b[2]) < 1) throw new Error(`--prompts ${spec}: needs at least one prompt`);
  const specs = Array.from({ length: epochs }, (_, e) => (fresh && b ? `${b[1]}:${b[2]}:${Number(b[3] ?? 0) + 1000 * e}` : spec));
  const perEpoch = fresh ? specs.map((s) => readPrompts(s)) : Array.from({ length: epochs }, () => readPrompts(spec));
  return { specs, perEpoch, ...(b ? { set: b[1] as BuiltinPromptSet } : {}) };
}

/** Whether prompt `j` of a built-in set is an edit prompt (mix interleaves gsm8k first, so the odd indices). */
export function isEditPrompt(set: BuiltinPromptSet | undefined, j: number): boolean {
  return set === "edit" || (set === "mix" && j % 2 === 1);
}

export interface GrpoSettings {
  /** smollm2, tiny or a prepared directory. */
  model: string;
  prompts: string;
  n: number;
  maxTokens: number;
  epochs: number;
  drift: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  fresh: boolean;
  /** Mode labels (default GRPO_DEFAULT_MODES). */
  modes?: string | readonly string[];
  /** The drafters of the specactor modes that do not name theirs (default suffix,ngram,model). */
  drafters?: readonly DrafterName[];
  /** Vanilla and the fixed/batch-table ablations: the draft length (default 4). */
  draftLen?: number;
  threads?: number;
}

export interface ModeProgress {
  addTokens(n: number): void;
  complete(): void;
  finish(): void;
}

export interface GrpoBenchOptions extends GrpoSettings {
  outDir: string;
  /** Called as each mode starts, with its sample count; what it returns hears the mode's progress. */
  onMode?: (label: string, samples: number) => ModeProgress | undefined;
}

export interface EpochFigures {
  epoch: number;
  makespan_s: number;
  speedup: number;
  tokens_per_s: number;
  generated_tokens: number;
  exact_samples: number;
  samples: number;
  divergences: number;
  divergence_rate: number;
  /** Sequence-steps that carried a draft. */
  draft_steps?: number;
  /** Accepted draft tokens per sequence-step that carried a draft, per drafter (specactor: and `all`); NaN (null) without such steps. */
  accepted_per_verify_step?: Record<string, number>;
  /** specactor: time in each drafter's propose calls (NAME.propose_ms), whether or not the policy verified its drafts. */
  propose_ms?: Record<string, number>;
  /** specactor: NAME.accepted / drafting_steps (batch steps the policy drafted on). */
  accepted_per_drafting_step?: Record<string, number>;
  timeline: {
    /** (t_s, live sequences), see the file comment. */
    batch: [number, number][];
    throughput_bin_s: number;
    /** (bin centre t_s, tokens/s). */
    throughput: [number, number][];
  };
}

export interface SpecActorFigures {
  policy: string;
  drafters: string[];
  makespan_weighting: boolean;
  /** Time-weighted mean predicted gain over the last epoch's decode steps. */
  predicted_speedup: number;
  /** The last epoch's measured speed-up. */
  measured_speedup: number;
  predicted_epoch: number;
  decisions: number;
  cost_model_error: number;
  cost_samples: { predictedMs: number; measuredMs: number; rows: number; sequences: number }[];
}

export interface ModeReport {
  mode: string;
  kind: Mode;
  drafter?: string;
  drafters?: string[];
  policy?: string;
  makespan?: boolean;
  epochs: EpochFigures[];
  total: { makespan_s: number; speedup: number; tokens_per_s: number; exact_samples: number; samples: number; divergences: number; draft_steps?: number; accepted_per_verify_step?: Record<string, number> };
  specactor?: SpecActorFigures;
  summary: RolloutSummary;
}

export interface CopyShare {
  set: BuiltinPromptSet;
  n: number;
  edit_prompts_per_epoch: number;
  /** Copied edit response tokens / edit response tokens, plain's samples. */
  per_epoch: { epoch: number; share: number; tokens: number; samples: number }[];
  overall: number;
}

export interface GrpoReport {
  command: string;
  settings: Record<string, unknown>;
  modes: ModeReport[];
  copy_share?: CopyShare;
  files: string[];
}

/** The command line that reproduces a run (its seed included). */
export function reproduceCommand(s: GrpoSettings, modes: readonly string[]): string {
  const q = (x: string) => (/^[\w@%+=:,./[\]-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`);
  const parts = [
    "specactor bench-grpo",
    `--model ${q(s.model)}`,
    `--prompts ${q(s.prompts)}`,
    `--n ${s.n}`,
    `--max-tokens ${s.maxTokens}`,
    `--epochs ${s.epochs}`,
    `--drift ${s.drift}`,
    `--temperature ${s.temperature}`,
    `--top-p ${s.topP}`,
    `--top-k ${s.topK}`,
    `--modes ${q(modes.join(","))}`,
    `--seed ${s.seed}`,
  ];
  if (s.drafters) parts.push(`--drafters ${s.drafters.join(",")}`);
  if (s.draftLen !== undefined) parts.push(`--draft-len ${s.draftLen}`);
  if (s.fresh) parts.push("--fresh");
  if (s.threads !== undefined) parts.push(`--threads ${s.threads}`);
  return parts.join(" ");
}

function checkSettings(s: GrpoSettings): void {
  const int = (name: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  };
  int("n", s.n, 1);
  int("max-tokens", s.maxTokens, 1);
  int("epochs", s.epochs, 1);
  if (s.draftLen !== undefined) int("draft-len", s.draftLen, 1);
  if (s.threads !== undefined) int("threads", s.threads, 1);
  if (!Number.isFinite(s.drift) || s.drift < 0) throw new Error(`--drift must be a number >= 0, got ${s.drift}`);
  if (!Number.isSafeInteger(s.seed) || s.seed < 0) throw new Error(`--seed must be a non-negative integer, got ${s.seed}`);
  validateParams({ temperature: s.temperature, topP: s.topP, topK: s.topK });
}

/** Checks the settings, the modes and the prompts (reading a file) without any model work; throws a message for the user. */
export function checkGrpoInputs(o: GrpoSettings): { modes: GrpoMode[]; prompts: GrpoPrompts } {
  checkSettings(o);
  const modes = parseGrpoModes(o.modes ?? GRPO_DEFAULT_MODES, o.drafters ?? SPECACTOR_DRAFTERS);
  return { modes, prompts: grpoPrompts(o.prompts, o.epochs, o.fresh) };
}

/**
 * Runs the benchmark and writes report.json, report.md and the PNGs into `outDir`. Every input is
 * checked (modes, settings, prompts) before any model work.
 */
export async function runGrpoBench(o: GrpoBenchOptions): Promise<GrpoReport> {
  const { modes, prompts } = checkGrpoInputs(o);
  const modelDir = await resolveModel(o.model);
  const sets = o.fresh ? prompts.perEpoch : [prompts.perEpoch[0]];
  const { promptIds: flat, tokenizer } = await loadPromptIds(sets.flat(), modelDir, false);
  tokenizer?.close();
  const count = prompts.perEpoch[0].length;
  const epochPrompts = prompts.perEpoch.map((_, e) => (o.fresh ? flat.slice(e * count, (e + 1) * count) : flat));
  const draftLen = o.draftLen ?? 4;
  const params = { temperature: o.temperature, topP: o.topP, topK: o.topK };
  const base: Omit<RolloutPlan, "mode"> = {
    modelDir,
    promptIds: epochPrompts[0],
    ...(o.fresh ? { epochPrompts } : {}),
    n: o.n,
    maxTokens: o.maxTokens,
    params,
    seed: o.seed,
    maxBatch: count * o.n, // every sample admitted at once
    epochs: o.epochs,
    drift: o.drift,
    draftLen,
    threads: o.threads,
  };

  const runs: { m: GrpoMode; records: SampleRecord[]; summary: RolloutSummary; steps: [number, number, number][][] }[] = [];
  for (const m of modes) {
    const plan: RolloutPlan = { ...base, mode: m.mode, drafter: m.drafter, drafters: m.drafters, policy: m.policy, makespan: m.makespan };
    // per epoch: (performance.now() ms, sequences, tokens emitted) after every engine step
    const steps: [number, number, number][][] = Array.from({ length: o.epochs }, () => []);
    let current = 0;
    const progress = o.onMode?.(m.label, count * o.n * o.epochs);
    const r = await runRollout(plan, {
      onStep: (e, sequences) => {
        current = e;
        steps[e].push([performance.now(), sequences, 0]);
      },
      onTokens: (k) => {
        const s = steps[current];
        if (s.length > 0) s[s.length - 1][2] += k;
        progress?.addTokens(k);
      },
      onSample: () => progress?.complete(),
    });
    progress?.finish();
    runs.push({ m, ...r, steps });
  }

  const plain = runs[0];
  const reports: ModeReport[] = runs.map((run) => modeReport(run, plain, o.epochs));
  const copy = prompts.set === "edit" || prompts.set === "mix" ? copyShare(prompts.set, plain.records, epochPrompts) : undefined;

  const command = reproduceCommand(o, modes.map((m) => m.label));
  const settings = {
    model: o.model,
    model_dir: modelDir,
    prompts: o.prompts,
    prompt_specs: prompts.specs,
    fresh: o.fresh,
    prompts_per_epoch: count,
    n: o.n,
    samples_per_epoch: count * o.n,
    max_batch: count * o.n,
    max_tokens: o.maxTokens,
    epochs: o.epochs,
    drift: o.drift,
    temperature: o.temperature,
    top_p: o.topP,
    top_k: o.topK,
    seed: o.seed,
    draft_len: draftLen,
    specactor_drafters: [...(o.drafters ?? SPECACTOR_DRAFTERS)],
    threads: o.threads ?? null,
    modes: modes.map((m) => m.label),
    engine: plain.summary.engine,
  };
  fs.mkdirSync(o.outDir, { recursive: true });
  const files = writePlots(o.outDir, reports, o.epochs);
  const report: GrpoReport = { command, settings, modes: reports, ...(copy ? { copy_share: copy } : {}), files: ["report.json", "report.md", ...files] };
  fs.writeFileSync(path.join(o.outDir, "report.json"), JSON.stringify(report, null, 1) + "\n");
  fs.writeFileSync(path.join(o.outDir, "report.md"), reportMarkdown(report));
  return report;
}

function modeReport(run: { m: GrpoMode; records: SampleRecord[]; summary: RolloutSummary; steps: [number, number, number][][] }, plain: { records: SampleRecord[]; summary: RolloutSummary }, epochs: number): ModeReport {
  const { m, summary } = run;
  const figs: EpochFigures[] = [];
  for (let e = 0; e < epochs; e++) {
    const s = summary.per_epoch[e];
    const p = plain.summary.per_epoch[e];
    const x = exactness(plain.records, run.records, e);
    const acc = acceptedFigures(m, s);
    figs.push({
      epoch: e,
      makespan_s: s.wall_s,
      speedup: round(p.wall_s / Math.max(s.wall_s, 1e-9), 3),
      tokens_per_s: s.tokens_per_s,
      generated_tokens: s.generated_tokens,
      exact_samples: x.exact,
      samples: x.samples,
      divergences: x.divergences,
      divergence_rate: x.rate,
      ...acc,
      // one bin width per epoch for every mode (plain's), so the curves compare
      timeline: timelines(run.steps[e], s.wall_s, throughputBin(p.wall_s)),
    });
  }
  const sum = (f: (x: EpochFigures) => number) => figs.reduce((a, x) => a + f(x), 0);
  const makespan = sum((x) => x.makespan_s);
  const plainMakespan = plain.summary.per_epoch.reduce((a, x) => a + x.wall_s, 0);
  const total: ModeReport["total"] = {
    makespan_s: round(makespan, 3),
    speedup: round(plainMakespan / Math.max(makespan, 1e-9), 3),
    tokens_per_s: round(sum((x) => x.generated_tokens) / Math.max(makespan, 1e-9), 2),
    exact_samples: sum((x) => x.exact_samples),
    samples: sum((x) => x.samples),
    divergences: sum((x) => x.divergences),
  };
  const accTotal = totalAccepted(m, summary);
  if (accTotal) {
    total.draft_steps = sum((x) => x.draft_steps ?? 0);
    total.accepted_per_verify_step = accTotal;
  }
  const out: ModeReport = {
    mode: m.label,
    kind: m.mode,
    ...(m.drafter ? { drafter: m.drafter } : {}),
    ...(m.drafters ? { drafters: m.drafters } : {}),
    ...(m.policy ? { policy: m.policy } : {}),
    ...(m.makespan !== undefined ? { makespan: m.makespan } : {}),
    epochs: figs,
    total,
    summary,
  };
  if (m.mode === "specactor" && summary.specactor) out.specactor = specactorFigures(m, summary, figs[epochs - 1]);
  return out;
}

/** Accepted tokens per verify step per drafter (see the file comment). */
function acceptedFigures(m: GrpoMode, s: RolloutSummary["per_epoch"][number]): Pick<EpochFigures, "draft_steps" | "accepted_per_verify_step" | "accepted_per_drafting_step" | "propose_ms"> {
  const d = s.drafter;
  if (!d) return {};
  const steps = d.verify_steps;
  if (m.mode !== "specactor") return { draft_steps: steps, accepted_per_verify_step: { [m.drafter!]: ratio(d.accepted_tokens, steps) } };
  const metrics = d.metrics ?? {};
  const drafting = metrics.drafting_steps ?? 0;
  const perStep: Record<string, number> = {};
  const perDrafting: Record<string, number> = {};
  const proposeMs: Record<string, number> = {};
  for (const name of m.drafters ?? []) {
    proposeMs[name] = metrics[`${name}.propose_ms`] ?? NaN;
    perStep[name] = ratio(metrics[`${name}.accepted`] ?? 0, steps);
    perDrafting[name] = ratio(metrics[`${name}.accepted`] ?? 0, drafting);
  }
  perStep.all = ratio(d.accepted_tokens, steps);
  perDrafting.all = ratio(metrics.accepted ?? d.accepted_tokens, drafting);
  return { draft_steps: steps, accepted_per_verify_step: perStep, accepted_per_drafting_step: perDrafting, propose_ms: proposeMs };
}

function totalAccepted(m: GrpoMode, summary: RolloutSummary): Record<string, number> | undefined {
  const ds = summary.per_epoch.map((e) => e.drafter).filter((d) => d !== undefined);
  if (ds.length === 0) return undefined;
  const steps = ds.reduce((a, d) => a + d.verify_steps, 0);
  if (m.mode !== "specactor") return { [m.drafter!]: ratio(ds.reduce((a, d) => a + d.accepted_tokens, 0), steps) };
  const out: Record<string, number> = {};
  for (const name of m.drafters ?? []) out[name] = ratio(ds.reduce((a, d) => a + (d.metrics?.[`${name}.accepted`] ?? 0), 0), steps);
  out.all = ratio(ds.reduce((a, d) => a + d.accepted_tokens, 0), steps);
  return out;
}

function specactorFigures(m: GrpoMode, summary: RolloutSummary, last: EpochFigures): SpecActorFigures {
  const r = summary.specactor as {
    policy?: string;
    drafters?: string[];
    cost_model?: { mean_relative_error?: number };
    cost_samples?: SpecActorFigures["cost_samples"];
    decisions?: { predicted_gain: number; predicted_ms: number }[];
  };
  const decisions = r.decisions ?? [];
  let w = 0;
  let wg = 0;
  for (const d of decisions) {
    if (!(Number.isFinite(d.predicted_ms) && Number.isFinite(d.predicted_gain)) || d.predicted_ms <= 0) continue;
    w += d.predicted_ms;
    wg += d.predicted_ms * d.predicted_gain;
  }
  return {
    policy: r.policy ?? m.policy ?? "cost",
    drafters: r.drafters ?? m.drafters ?? [],
    makespan_weighting: m.makespan ?? true,
    predicted_speedup: w > 0 ? round(wg / w, 3) : NaN,
    measured_speedup: last.speedup,
    predicted_epoch: last.epoch,
    decisions: decisions.length,
    cost_model_error: r.cost_model?.mean_relative_error ?? NaN,
    cost_samples: r.cost_samples ?? [],
  };
}

/** The throughput bin of an epoch: 1 s, or a twentieth of an epoch shorter than 20 s (at least 1 ms). */
export function throughputBin(makespanS: number): number {
  return makespanS >= 20 ? 1 : Math.max(1e-3, round(makespanS / 20, 4));
}

/** The live batch and the binned throughput of one epoch, from its steps (ms, sequences, tokens). */
export function timelines(steps: readonly [number, number, number][], wallS: number, binS = throughputBin(wallS)): EpochFigures["timeline"] {
  if (steps.length === 0) return { batch: [], throughput_bin_s: binS, throughput: [] };
  const last = steps[steps.length - 1][0];
  const start = Math.min(steps[0][0], last - wallS * 1000);
  const span = Math.max(wallS, (last - start) / 1000, 1e-6);
  const batch: [number, number][] = [[0, steps[0][1]]];
  for (const [t, seqs] of steps) batch.push([round((t - start) / 1000, 4), seqs]);
  batch.push([round(span, 4), 0]);
  const bin = binS;
  const bins = new Array<number>(Math.max(1, Math.ceil(span / bin))).fill(0);
  for (const [t, , tokens] of steps) bins[Math.min(bins.length - 1, Math.floor((t - start) / 1000 / bin))] += tokens;
  const throughput = bins.map((tok, i): [number, number] => [round((i + 0.5) * bin, 4), round(tok / bin, 1)]);
  return { batch, throughput_bin_s: round(bin, 4), throughput };
}

function copyShare(set: BuiltinPromptSet, plain: SampleRecord[], epochPrompts: number[][][]): CopyShare {
  const N = 4;
  const per: CopyShare["per_epoch"] = [];
  let copiedAll = 0;
  let tokensAll = 0;
  epochPrompts.forEach((ids, e) => {
    let copied = 0;
    let tokens = 0;
    let samples = 0;
    for (const r of plain) {
      if (r.epoch !== e || !isEditPrompt(set, r.prompt_index)) continue;
      copied += copiedShare(ids[r.prompt_index], r.token_ids, N) * r.token_ids.length;
      tokens += r.token_ids.length;
      samples++;
    }
    per.push({ epoch: e, share: round(copied / Math.max(1, tokens), 4), tokens, samples });
    copiedAll += copied;
    tokensAll += tokens;
  });
  const editPrompts = epochPrompts[0].filter((_, j) => isEditPrompt(set, j)).length;
  return { set, n: N, edit_prompts_per_epoch: editPrompts, per_epoch: per, overall: round(copiedAll / Math.max(1, tokensAll), 4) };
}

/** Line and scatter charts: wide enough that the legend (a third of the width) keeps a mode's name whole. */
const LINE_WIDTH = 1000;

/** Writes the PNGs; returns their file names. */
function writePlots(dir: string, modes: ModeReport[], epochs: number): string[] {
  const files: string[] = [];
  const write = (name: string, png: Buffer) => {
    fs.writeFileSync(path.join(dir, name), png);
    files.push(name);
  };
  for (let e = 0; e < epochs; e++) {
    write(
      `batch-e${e}.png`,
      lineChart({
        title: `Live batch, epoch ${e}`,
        xLabel: "time (s)",
        yLabel: "sequences in the step",
        series: modes.map((m) => ({ name: m.mode, points: m.epochs[e].timeline.batch })),
        yMin: 0,
        step: true,
        width: LINE_WIDTH,
      }),
    );
    write(
      `throughput-e${e}.png`,
      lineChart({
        title: `Throughput, epoch ${e} (bins of ${fmtS(modes[0].epochs[e].timeline.throughput_bin_s)})`,
        xLabel: "time (s)",
        yLabel: "tokens/s",
        series: modes.map((m) => ({ name: m.mode, points: m.epochs[e].timeline.throughput })),
        yMin: 0,
        width: LINE_WIDTH,
      }),
    );
  }
  // bar charts label groups under the bars: "specactor" shortened to "SA" and the chart widened so labels fit
  const short = (mode: string) => mode.replace(/^specactor/, "SA");
  const barWidth = (labels: string[]) => Math.min(4000, Math.max(800, 300 + labels.length * (Math.max(...labels.map((l) => l.length)) * 12 + 24)));
  const groups = modes.map((m) => short(m.mode));
  const hasSA = modes.some((m) => m.kind === "specactor") ? " (SA = specactor)" : "";
  const perEpoch = (f: (x: EpochFigures) => number) => Array.from({ length: epochs }, (_, e) => ({ name: `epoch ${e}`, values: modes.map((m) => f(m.epochs[e])) }));
  write("makespan.png", barChart({ title: `Makespan per epoch${hasSA}`, yLabel: "seconds", groups, series: perEpoch((x) => x.makespan_s), width: barWidth(groups) }));
  write("speedup.png", barChart({ title: `Speed-up over plain (makespan)${hasSA}`, yLabel: "x plain", groups, series: perEpoch((x) => x.speedup), refLine: 1, width: barWidth(groups) }));
  const drafting = modes.filter((m) => m.total.accepted_per_verify_step);
  if (drafting.length > 0) {
    const names = [...new Set(drafting.flatMap((m) => Object.keys(m.total.accepted_per_verify_step!)))].sort((a, b) => (a === "all" ? 1 : b === "all" ? -1 : DRAFTERS.indexOf(a as DrafterName) - DRAFTERS.indexOf(b as DrafterName)));
    write(
      "accepted.png",
      barChart({
        title: `Accepted draft tokens per verify step (all epochs)${hasSA}`,
        yLabel: "tokens per sequence-step",
        groups: drafting.map((m) => short(m.mode)),
        series: names.map((n) => ({ name: n, values: drafting.map((m) => m.total.accepted_per_verify_step![n] ?? NaN) })),
        width: barWidth(drafting.map((m) => short(m.mode))),
      }),
    );
  }
  const spec = modes.filter((m) => m.specactor && m.specactor.cost_samples.length > 0);
  if (spec.length > 0) {
    const series: XYSeries[] = spec.map((m) => ({ name: m.mode, points: m.specactor!.cost_samples.map((s): [number, number] => [s.predictedMs, s.measuredMs]) }));
    write("cost-model.png", scatterChart({ title: "Step cost model: predicted vs measured", xLabel: "predicted step (ms)", yLabel: "measured step (ms)", series, diagonal: true, width: LINE_WIDTH }));
  }
  return files;
}

function reportMarkdown(r: GrpoReport): string {
  const s = r.settings as Record<string, unknown>;
  const L: string[] = [];
  L.push("# GRPO rollout benchmark", "");
  L.push(
    `Settings: model ${s.model} (${s.engine}), prompts ${s.prompts}${s.fresh ? ` fresh every epoch (${(s.prompt_specs as string[]).join(", ")})` : " (the same every epoch)"}, ` +
      `${s.prompts_per_epoch} prompts x n=${s.n} = ${s.samples_per_epoch} samples per epoch, all admitted at once; max ${s.max_tokens} tokens; ${s.epochs} epoch(s), drift ${s.drift}; ` +
      `T=${s.temperature} top-p=${s.top_p} top-k=${s.top_k}; draft length ${s.draft_len}; specactor drafters ${(s.specactor_drafters as string[]).join(",")}; seed ${s.seed}${s.threads !== null ? `; threads ${s.threads}` : ""}.`,
    "",
    "Reproduce:",
    "",
    "```",
    r.command,
    "```",
    "",
  );
  L.push("## Makespan per epoch", "");
  L.push("Speed-up is plain's makespan over the mode's, epoch by epoch; exact counts samples equal to plain's token for token.", "");
  L.push("| mode | epoch | makespan s | speed-up | tok/s | exact/samples | divergences |", "|---|---:|---:|---:|---:|---:|---:|");
  for (const m of r.modes) {
    for (const e of m.epochs) L.push(`| ${m.mode} | ${e.epoch} | ${e.makespan_s.toFixed(3)} | ${e.speedup.toFixed(2)}x | ${e.tokens_per_s.toFixed(1)} | ${e.exact_samples}/${e.samples} | ${e.divergences} |`);
    if (m.epochs.length > 1) L.push(`| ${m.mode} | all | ${m.total.makespan_s.toFixed(3)} | ${m.total.speedup.toFixed(2)}x | ${m.total.tokens_per_s.toFixed(1)} | ${m.total.exact_samples}/${m.total.samples} | ${m.total.divergences} |`);
  }
  L.push("");
  const spec = r.modes.filter((m) => m.specactor);
  if (spec.length > 0) {
    L.push("## SpecActor: predicted vs measured", "");
    L.push(
      "Predicted speed-up: the time-weighted mean of the policy's per-step predicted gain over plain, sum(predicted_ms x predicted_gain) / sum(predicted_ms), over the last epoch's decode steps; " +
        "measured: the last epoch's makespan speed-up (which also pays prefill and drafting). Cost-model error: mean |predicted - measured| / measured step time. " +
        "Propose ms: time in each drafter's propose calls, whether or not the policy verified its drafts.",
      "",
    );
    L.push(
      "| mode | policy | drafters | makespan weighting | predicted speed-up | measured speed-up | cost-model error | decisions | propose ms (last epoch) |",
      "|---|---|---|---|---:|---:|---:|---:|---|",
    );
    for (const m of spec) {
      const x = m.specactor!;
      const ms = m.epochs[m.epochs.length - 1].propose_ms ?? {};
      const propose = Object.entries(ms).map(([k, v]) => `${k} ${Number.isFinite(v) ? v : "-"}`).join(", ");
      L.push(`| ${m.mode} | ${x.policy} | ${x.drafters.join("+")} | ${x.makespan_weighting ? "on" : "off"} | ${fmtX(x.predicted_speedup)} | ${fmtX(x.measured_speedup)} | ${pct(x.cost_model_error)} | ${x.decisions} | ${propose} |`);
    }
    L.push("");
  }
  const drafting = r.modes.filter((m) => m.total.accepted_per_verify_step);
  if (drafting.length > 0) {
    const names = [...new Set(drafting.flatMap((m) => Object.keys(m.total.accepted_per_verify_step!)))].sort((a, b) => (a === "all" ? 1 : b === "all" ? -1 : DRAFTERS.indexOf(a as DrafterName) - DRAFTERS.indexOf(b as DrafterName)));
    L.push("## Accepted tokens per verify step", "");
    L.push(
      "Accepted draft tokens per sequence-step that carried a draft (draft steps: how many), all epochs. specactor: per drafter, the accepted nodes that drafter proposed (a node several proposed counts for each); `all`: every accepted draft token; `-`: no step carried a draft.",
      "",
    );
    L.push(`| mode | ${names.join(" | ")} | draft steps |`, `|---|${names.map(() => "---:").join("|")}|---:|`);
    for (const m of drafting) L.push(`| ${m.mode} | ${names.map((n) => fmtNum(m.total.accepted_per_verify_step![n])).join(" | ")} | ${m.total.draft_steps ?? 0} |`);
    L.push("");
  }
  if (r.copy_share) {
    const c = r.copy_share;
    L.push("## Copy share", "");
    L.push(
      `Share of edit response tokens copied from the prompt (a token inside a run of ${c.n} response tokens that occurs in the prompt), plain's samples of the ${c.edit_prompts_per_epoch} edit prompt(s) per epoch: ` +
        `**${pct(c.overall)}** overall (${c.per_epoch.map((e) => `epoch ${e.epoch}: ${pct(e.share)} of ${e.tokens} tokens`).join("; ")}).`,
      "",
    );
  }
  L.push("## Plots", "");
  for (const f of r.files.filter((f) => f.endsWith(".png"))) L.push(`![${f.replace(/\.png$/, "")}](${f})`, "");
  return L.join("\n");
}

/** a / b to 3 digits; NaN (JSON null, "-" in tables) when there were no steps to divide by. */
function ratio(a: number, b: number): number {
  return b > 0 ? round(a / b, 3) : NaN;
}

function fmtNum(x: number | undefined): string {
  return x !== undefined && Number.isFinite(x) ? x.toFixed(2) : "-";
}

function fmtX(x: number): string {
  return Number.isFinite(x) ? `${x.toFixed(2)}x` : "-";
}

function pct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "-";
}

function fmtS(s: number): string {
  return s >= 1 ? `${s} s` : `${Math.round(s * 1000)} ms`;
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
