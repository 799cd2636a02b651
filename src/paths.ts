/**
 * Where the project, its Python and its cache live. The server runs either from a clone (the
 * Makefile's `.venv/` and `.cache/`) or from the copy a Python wheel carries (`specactor/_server/`,
 * marked by `wheel.json`; `python -m specactor.server install` gives it its npm packages), where the
 * cache is the user's and the Python is the one that installed the wheel (SPECACTOR_PYTHON).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

let root: string | undefined;

/** The directory holding the project's package.json (works from src/, dist/src/ and a wheel's copy). */
export function projectRoot(): string {
  if (root) return root;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, "utf8")).name === "specactor") return (root = dir);
    if (path.dirname(dir) === dir) throw new Error("cannot find the specactor project root");
  }
}

/** True when running from the server copy inside an installed Python package, not from a clone. */
export function isWheelCopy(): boolean {
  return fs.existsSync(path.join(projectRoot(), "wheel.json"));
}

/** `$XDG_CACHE_HOME/specactor`, else `~/.cache/specactor` (python/specactor/server_process.py agrees). */
export function userCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "specactor");
}

/**
 * The cache (models, downloads); SPECACTOR_CACHE overrides it. A clone's is its `.cache/` (the
 * Makefile's); a wheel's copy never writes into site-packages and uses the user's cache instead.
 */
export function cacheDir(): string {
  if (process.env.SPECACTOR_CACHE) return process.env.SPECACTOR_CACHE;
  return isWheelCopy() ? userCacheDir() : path.join(projectRoot(), ".cache");
}

/**
 * The Python interpreter for workers, model preparation and text; SPECACTOR_PYTHON overrides it
 * (and is set when Python starts the server). A clone's default is the Makefile's `.venv/`.
 */
export function pythonBin(): string {
  if (process.env.SPECACTOR_PYTHON) return process.env.SPECACTOR_PYTHON;
  return isWheelCopy() ? "python3" : path.join(projectRoot(), ".venv", "bin", "python");
}

/**
 * PYTHONPATH for a Python child: a clone's `python/` first (so its sources are used even by an
 * interpreter without the editable install), then the caller's. A wheel's copy has no `python/`:
 * the package is installed in the interpreter, and PYTHONPATH is passed on unchanged.
 */
export function pythonPath(): string | undefined {
  const dir = path.join(projectRoot(), "python");
  const parts = [fs.existsSync(dir) ? dir : undefined, process.env.PYTHONPATH].filter(Boolean);
  return parts.length ? parts.join(path.delimiter) : undefined;
}

/** `process.env` with `pythonPath()` as PYTHONPATH. */
export function pythonEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  const p = pythonPath();
  if (p === undefined) delete env.PYTHONPATH;
  else env.PYTHONPATH = p;
  return env;
}

/** An error message for a missing interpreter that says how to get one in either setting. */
export function missingPython(py: string, what: string): string {
  return isWheelCopy()
    ? `${what} needs Python with the specactor package (${py} not found); set SPECACTOR_PYTHON or start the server from Python`
    : `${what} needs the Python environment (${py} not found); run \`make setup\` first`;
}
