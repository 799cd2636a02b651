/** A small, strict option parser: unknown options and malformed numbers are one-line errors. */

export class UsageError extends Error {}

/** Runs a value parser, turning its error into a usage error (a one-line message, exit code 2). */
export function usage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

export type OptType = "string" | "number" | "int" | "flag";

export interface OptSpec {
  name: string;
  type: OptType;
  help: string;
  default?: string | number | boolean;
  required?: boolean;
  metavar?: string;
}

export type Parsed = Record<string, string | number | boolean | undefined>;

export function parseArgs(argv: string[], specs: OptSpec[]): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: Parsed = {};
  for (const s of specs) out[s.name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument '${arg}' (see --help)`);
    const [key, inline] = arg.slice(2).split(/=(.*)/s, 2);
    const spec = byName.get(key);
    if (!spec) throw new UsageError(`unknown option --${key} (see --help)`);
    if (spec.type === "flag") {
      out[key] = true;
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new UsageError(`--${key} needs a value`);
    out[key] = convert(key, spec.type, value);
  }
  for (const s of specs) if (s.required && out[s.name] === undefined) throw new UsageError(`--${s.name} is required`);
  return out;
}

function convert(key: string, type: OptType, value: string): string | number {
  if (type === "string") return value;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n)) throw new UsageError(`--${key}: expected a number, got '${value}'`);
  if (type === "int" && !Number.isInteger(n)) throw new UsageError(`--${key}: expected an integer, got '${value}'`);
  return n;
}

export function helpText(usage: string, summary: string, specs: OptSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  --${s.name}${s.type === "flag" ? "" : ` ${s.metavar ?? s.type.toUpperCase()}`}`;
    const def = s.default !== undefined && s.type !== "flag" ? ` (default: ${s.default})` : s.required ? " (required)" : "";
    return `${left.padEnd(30)} ${s.help}${def}`;
  });
  return `usage: ${usage}\n\n${summary}\n\noptions:\n${rows.join("\n")}\n  --help                       show this help\n`;
}
