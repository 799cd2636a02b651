/** Where the project, its virtual environment and its cache live. */
import * as fs from "node:fs";
import * as path from "node:path";

let root: string | undefined;

/** The directory holding the project's package.json (works from src/ and from dist/src/). */
export function projectRoot(): string {
  if (root) return root;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, "utf8")).name === "specactor") return (root = dir);
    if (path.dirname(dir) === dir) throw new Error("cannot find the specactor project root");
  }
}

/** The cache the Makefile owns (models, downloads); SPECACTOR_CACHE overrides it. */
export function cacheDir(): string {
  return process.env.SPECACTOR_CACHE ?? path.join(projectRoot(), ".cache");
}

/** The project's Python interpreter (the Makefile's virtual environment); SPECACTOR_PYTHON overrides it. */
export function pythonBin(): string {
  return process.env.SPECACTOR_PYTHON ?? path.join(projectRoot(), ".venv", "bin", "python");
}
