/**
 * Named models and their prepared directories. `prepare-model NAME` runs the Python preparation
 * (weights never pass through TypeScript) into `<cache>/models/NAME-<key>`, where the key hashes the
 * preparation sources and the versions of the packages that shape a prepared model (torch,
 * transformers, onnx, ...; python/specactor/models/key.py, asked once per process), so editing them
 * or changing a pin re-prepares and a rerun is instant. A new key replaces the directories of older
 * ones (about 2 GB each for smollm2 with a drifted epoch).
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { cacheDir, missingPython, pythonBin, pythonEnv } from "../paths";

export const MODEL_NAMES = ["smollm2", "tiny"] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}

let key: string | undefined;

/**
 * The preparation key, from the Python that prepares (`python -m specactor.models.key`): a hash of
 * the preparation sources it imports and of its installed package versions. Works the same from a
 * clone and from a wheel install (where the sources are in site-packages).
 */
export function preparationKey(): string {
  if (key) return key;
  const py = pythonBin();
  const r = spawnSync(py, ["-m", "specactor.models.key"], { encoding: "utf8", env: pythonEnv() });
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") throw new Error(missingPython(py, "a named model"));
  const out = (r.stdout ?? "").trim();
  if (r.status !== 0 || !/^[0-9a-f]{12}$/.test(out)) {
    throw new Error(`cannot compute the model preparation key with ${py} (exit ${r.status}):\n${r.stderr ?? r.error}`);
  }
  return (key = out);
}

export function preparedDir(name: ModelName): string {
  return path.join(cacheDir(), "models", `${name}-${preparationKey()}`);
}

export function isPrepared(dir: string): boolean {
  return fs.existsSync(path.join(dir, "manifest.json"));
}

/** Runs a Python module of the project with progress on stderr; throws on failure. */
async function runPythonModule(args: string[], what: string): Promise<void> {
  const py = pythonBin();
  if (py.includes(path.sep) && !fs.existsSync(py)) throw new Error(missingPython(py, what));
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(py, args, { stdio: ["ignore", "inherit", "inherit"], env: pythonEnv() });
    child.on("error", (e) => reject((e as NodeJS.ErrnoException).code === "ENOENT" ? new Error(missingPython(py, what)) : e));
    child.on("exit", (c) => resolve(c ?? 1));
  });
  if (code !== 0) throw new Error(`${what} failed (exit ${code})`);
}

/** Prepares `name` unless already cached; returns its directory. Python's progress goes to stderr. */
export async function prepareModel(name: ModelName): Promise<string> {
  const dir = preparedDir(name);
  if (isPrepared(dir)) return dir;
  process.stderr.write(`preparing model ${name} into ${dir} (first time only)\n`);
  await runPythonModule(
    ["-m", "specactor.models.prepare", name, dir, "--downloads", path.join(cacheDir(), "downloads")],
    `preparing model ${name}`,
  );
  if (!isPrepared(dir)) throw new Error(`preparing model ${name} left no manifest in ${dir}`);
  pruneSuperseded(name, dir);
  return dir;
}

/** Removes `name`'s prepared directories of other keys, and their drifted epochs. */
function pruneSuperseded(name: ModelName, current: string): void {
  const models = path.dirname(current);
  const keep = path.basename(current);
  const stale = new RegExp(`^${name}-[0-9a-f]{12}(\\.drift.*)?$`);
  for (const entry of fs.readdirSync(models)) {
    if (stale.test(entry) && entry !== keep && !entry.startsWith(`${keep}.`)) {
      fs.rmSync(path.join(models, entry), { recursive: true, force: true });
      process.stderr.write(`removed ${path.join(models, entry)} (an older preparation of ${name})\n`);
    }
  }
}

/**
 * The model of epoch `epoch` under drift `scale`: epoch 0 is `base`; epoch e perturbs epoch e-1's
 * weights (python/specactor/models/drift.py). Cached beside the base directory.
 */
export async function driftedModel(base: string, scale: number, epoch: number): Promise<string> {
  if (epoch === 0 || scale === 0) return base;
  const dir = path.join(path.dirname(base), `${path.basename(base)}.drift${scale}`, `epoch${epoch}`);
  if (isPrepared(dir)) return dir;
  const previous = await driftedModel(base, scale, epoch - 1);
  process.stderr.write(`preparing epoch ${epoch} of ${path.basename(base)} with drift ${scale}\n`);
  await runPythonModule(
    ["-m", "specactor.models.drift", "make", previous, dir, "--scale", String(scale), "--epoch", String(epoch)],
    `drifting model to epoch ${epoch}`,
  );
  return dir;
}

/** Mean per-token KL(p_a || p_b) over the given sequences (JSONL of {ids, start}), via Python. */
export async function meanKl(a: string, b: string, sequencesFile: string): Promise<number> {
  const { spawnSync } = await import("node:child_process");
  const r = spawnSync(pythonBin(), ["-m", "specactor.models.drift", "kl", a, b, "--sequences", sequencesFile], {
    encoding: "utf8",
    env: pythonEnv(),
  });
  if (r.status !== 0) throw new Error(`KL between epochs failed:\n${r.stderr}`);
  return (JSON.parse(r.stdout.trim().split("\n").pop()!) as { mean_kl: number }).mean_kl;
}

/** The prepared drafter directories of a model (its 8-bit copy, layer-truncated copies); the first is the default. */
export function drafterDirs(modelDir: string): string[] {
  const manifest = path.join(modelDir, "manifest.json");
  if (!fs.existsSync(manifest)) return [];
  const names = (JSON.parse(fs.readFileSync(manifest, "utf8")) as { drafters?: string[] }).drafters ?? [];
  return names.map((n) => path.join(modelDir, "drafters", n));
}

/**
 * `--drafter-model SPEC`: a drafter of the model's manifest by name (`q8`, `layers8`), so that every
 * drifted epoch uses its own, or a prepared directory. Without SPEC: the model's first drafter that
 * has the form the engine loads (`onnx`: onnx/model.json; `torch`, a Python worker: hf/ too), else
 * the model itself.
 */
export function drafterDir(modelDir: string, spec?: string, form: "onnx" | "torch" = "onnx"): string {
  const has = (d: string) => fs.existsSync(path.join(d, "onnx", "model.json")) && (form === "onnx" || fs.existsSync(path.join(d, "hf", "config.json")));
  const dirs = drafterDirs(modelDir);
  if (spec === undefined) return dirs.find(has) ?? modelDir;
  const named = dirs.find((d) => path.basename(d) === spec) ?? (fs.existsSync(spec) ? path.resolve(spec) : undefined);
  if (named === undefined) {
    throw new Error(`--drafter-model ${spec}: not a drafter of ${path.basename(modelDir)} (${dirs.map((d) => path.basename(d)).join(", ") || "none"}) nor a directory`);
  }
  if (!has(named)) throw new Error(`--drafter-model ${spec}: ${named} has no ${form === "onnx" ? "onnx/model.json" : "hf/ and onnx/model.json (a worker loads hf/)"}`);
  return named;
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
