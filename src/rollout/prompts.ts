/**
 * Prompt input: JSONL lines `{"prompt": "..."}` (chat template applied) or `{"prompt_ids": [...]}`,
 * or a built-in generated set: `gsm8k:N[:SEED]`, `edit:N[:SEED]` or `mix:N[:SEED]` (N prompts,
 * seed 0 by default; see BUILTIN_PROMPT_SETS). Any other spec is read as a file. Errors name the
 * file and line.
 */
import * as fs from "node:fs";
import { gsm8kPrompts } from "../data/gsm8k";
import { editPrompts, mixPrompts } from "../data/edit";

export type PromptInput = { text: string } | { ids: number[] };

export class InputError extends Error {}

export type BuiltinPromptSet = "gsm8k" | "edit" | "mix";

/** The built-in prompt sets, with one line each for --help texts. */
export const BUILTIN_PROMPT_SETS: readonly { name: BuiltinPromptSet; spec: string; summary: string }[] = [
  { name: "gsm8k", spec: "gsm8k:N[:SEED]", summary: "GSM8K-style word problems, answered step by step (little to copy from the prompt)" },
  { name: "edit", spec: "edit:N[:SEED]", summary: "reproduce a JSON record or a Python/JavaScript snippet with one stated change (mostly copied)" },
  { name: "mix", spec: "mix:N[:SEED]", summary: "half gsm8k, half edit, interleaved, gsm8k first (odd N: one more gsm8k)" },
];

export function isBuiltinPromptSet(name: string): name is BuiltinPromptSet {
  return BUILTIN_PROMPT_SETS.some((s) => s.name === name);
}

/** The `count` prompts of a built-in set for `seed`, always the same texts. */
export function builtinPrompts(set: BuiltinPromptSet, count: number, seed = 0): string[] {
  switch (set) {
    case "gsm8k":
      return gsm8kPrompts(count, seed);
    case "edit":
      return editPrompts(count, seed);
    case "mix":
      return mixPrompts(count, seed);
  }
}

export function readPrompts(spec: string): PromptInput[] {
  const builtin = /^(gsm8k|edit|mix):(\d+)(?::(\d+))?$/.exec(spec);
  if (builtin) return builtinPrompts(builtin[1] as BuiltinPromptSet, Number(builtin[2]), Number(builtin[3] ?? 0)).map((text) => ({ text }));
  let raw: string;
  try {
    raw = fs.readFileSync(spec, "utf8");
  } catch (e) {
    throw new InputError(`cannot read prompts file ${spec}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  const prompts: PromptInput[] = [];
  raw.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    const where = `${spec}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw new InputError(`${where}: not valid JSON`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new InputError(`${where}: expected a JSON object`);
    const o = obj as Record<string, unknown>;
    if ("prompt_ids" in o) {
      const ids = o.prompt_ids;
      if (!Array.isArray(ids) || ids.length === 0 || !ids.every((t) => Number.isInteger(t) && t >= 0)) {
        throw new InputError(`${where}: "prompt_ids" must be a non-empty array of non-negative integers`);
      }
      prompts.push({ ids: ids as number[] });
    } else if (typeof o.prompt === "string") {
      if (o.prompt.length === 0) throw new InputError(`${where}: "prompt" is empty`);
      prompts.push({ text: o.prompt });
    } else {
      throw new InputError(`${where}: expected a "prompt" string or a "prompt_ids" array`);
    }
  });
  if (prompts.length === 0) throw new InputError(`${spec}: no prompts`);
  return prompts;
}
