/**
 * Prompt input: JSONL lines `{"prompt": "..."}` (chat template applied) or `{"prompt_ids": [...]}`,
 * or `gsm8k:N[:SEED]` for the built-in generated set. Errors name the file and line.
 */
import * as fs from "node:fs";
import { gsm8kPrompts } from "../data/gsm8k";

export type PromptInput = { text: string } | { ids: number[] };

export class InputError extends Error {}

export function readPrompts(spec: string): PromptInput[] {
  const builtin = /^gsm8k:(\d+)(?::(\d+))?$/.exec(spec);
  if (builtin) return gsm8kPrompts(Number(builtin[1]), Number(builtin[2] ?? 0)).map((text) => ({ text }));
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
