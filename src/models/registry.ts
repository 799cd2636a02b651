/**
 * Named models and their prepared directories. `prepare-model NAME` runs the Python preparation
 * (weights never pass through TypeScript) into `<cache>/models/NAME-<key>`, where the key hashes the
 * preparation sources, so editing them re-prepares and a rerun is instant.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { cacheDir, projectRoot, pythonBin } from "../paths";

export const MODEL_NAMES = ["smollm2", "tiny"] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}

/** Content key of the preparation code: every file under python/specactor/models/. */
export function preparationKey(): string {
  const dir = path.join(projectRoot(), "python", "specactor", "models");
  const h = createHash("sha256");
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".py")).sort()) {
    h.update(f).update("\0").update(fs.readFileSync(path.join(dir, f))).update("\0");
  }
  return h.digest("hex").slice(0, 12);
}

export function preparedDir(name: ModelName): string {
  return path.join(cacheDir(), "models", `${name}-${preparationKey()}`);
}

export function isPrepared(dir: string): boolean {
  return fs.existsSync(path.join(dir, "manifest.json"));
}

/** Prepares `name` unless already cached; returns its directory. Python's progress goes to stderr. */
export async function prepareModel(name: ModelName): Promise<string> {
  const dir = preparedDir(name);
  if (isPrepared(dir)) return dir;
  const py = pythonBin();
  if (!fs.existsSync(py)) {
    throw new Error(`the Python environment is missing (${py}); run \`make setup\` first`);
  }
  process.stderr.write(`preparing model ${name} into ${dir} (first time only)\n`);
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(
      py,
      ["-m", "specactor.models.prepare", name, dir, "--downloads", path.join(cacheDir(), "downloads")],
      { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, PYTHONPATH: path.join(projectRoot(), "python") } },
    );
    child.on("error", reject);
    child.on("exit", (c) => resolve(c ?? 1));
  });
  if (code !== 0 || !isPrepared(dir)) throw new Error(`preparing model ${name} failed (exit ${code})`);
  return dir;
}

/**
 * `--model` accepts a name (prepared on demand) or a prepared directory. Returns the directory.
 */
export async function resolveModel(spec: string): Promise<string> {
  if (isModelName(spec)) return prepareModel(spec);
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory()) {
    if (!fs.existsSync(path.join(spec, "onnx", "model.json"))) {
      throw new Error(`--model ${spec}: not a prepared model directory (no onnx/model.json)`);
    }
    return path.resolve(spec);
  }
  throw new Error(`unknown model '${spec}' (use ${MODEL_NAMES.join(", ")} or a prepared directory)`);
}
