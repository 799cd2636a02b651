import * as fs from "node:fs";
import * as path from "node:path";
import { projectRoot } from "../../src/paths";
import { isPrepared, preparedDir } from "../../src/models/registry";

export function vectors(): any {
  return JSON.parse(fs.readFileSync(path.join(projectRoot(), "bridge", "vectors", "sampling.json"), "utf8"));
}

/** The prepared tiny model; `make test` prepares it before the suites run. */
export function tinyDir(): string {
  const dir = preparedDir("tiny");
  if (!isPrepared(dir)) throw new Error(`tiny model not prepared (${dir}); run \`npx specactor prepare-model tiny\``);
  return dir;
}

/** Prompts of the speculation suites on tiny: varied lengths, one that repeats itself (n-gram food). */
export const TINY_PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301], [5, 6, 7, 5, 6, 7, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]];
