/**
 * `specactor serve`: the rollout server. The in-process engine and the same rollout core, drafters
 * and seeds as `specactor rollout`, behind the ZeroMQ/msgpack protocol of bridge/PROTOCOL.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Drafter } from "../drafters/drafter";
import type { Engine } from "../engine/engine";
import { ThreadedEngine } from "../engine/threaded-engine";
import { WorkerPool } from "../engine/worker-pool";
import { projectRoot, pythonBin } from "../paths";
import { drafterDir, resolveModel } from "../models/registry";
import { RolloutCore, type SpecConfig } from "../rollout/core";
import { SPECACTOR_MAX_NODES } from "../rollout/modes";
import { makeDrafter, makeModelDrafter, modelDrafterOptions, parseDraftCost } from "../drafters/registry";
import { POLICIES, speculationOf, threadSplit } from "../rollout/modes";
import { StepCostModel, profileEngine } from "../scheduler/cost-model";
import { SPECACTOR_DEFAULTS, SpecActorDrafter } from "../scheduler/specactor";
import { SPECULATION_OPTIONS, historyBounds } from "./speculation-options";
import { PROTOCOL_VERSION } from "../bridge/wire";
import { MetricsServer } from "../server/metrics";
import { RolloutService } from "../server/service";
import { ZmqServer } from "../server/zmq-server";
import { type OptSpec, type Parsed, UsageError, helpText, parseArgs, usage } from "./args";

const OPTIONS: OptSpec[] = [
  { name: "model", type: "string", default: "smollm2", metavar: "smollm2|tiny|DIR", help: "model name or prepared directory" },
  { name: "address", type: "string", default: "tcp://127.0.0.1:5555", metavar: "ADDR", help: "ZeroMQ endpoint to bind (loopback unless you say otherwise; tcp://127.0.0.1:* picks a port)" },
  { name: "config", type: "string", metavar: "FILE.json", help: "options as a JSON object keyed by option name; flags override it" },
  { name: "max-batch", type: "int", default: 64, help: "most sequences in one engine step" },
  ...SPECULATION_OPTIONS,
  { name: "drafter-model", type: "string", metavar: "NAME|DIR", help: "for --drafter model: a drafter of the model by name (q8, layers8) or a prepared directory (default: the first; drafter workers need one with hf/, layers8)" },
  { name: "draft-cost", type: "string", default: "auto", metavar: "auto|off|X", help: "model drafter: draft a token only while its estimated chance of acceptance beats its cost; auto times the drafter against the verifier, X fixes the ratio of their step costs, off drafts while the drafter is confident" },
  { name: "threads", type: "int", help: "onnxruntime (or torch worker) threads (default: all cores)" },
  { name: "ort-spinning", type: "string", default: "on", metavar: "on|off", help: "onnxruntime's pool threads spin between nodes (on: fastest on an idle machine; off: sleep, far faster when other processes share the cores, e.g. a local Ray)" },
  { name: "drafter-threads", type: "int", default: 1, help: "decoupled with the ONNX drafter: its threads, taken from --threads" },
  { name: "engine", type: "string", default: "onnx", metavar: "onnx|workers", help: "in-process ONNX engine, or Python torch engine workers (PROTOCOL.md section 5)" },
  { name: "workers", type: "int", default: 0, metavar: "N", help: "with --engine workers: start N local workers (python -m specactor.worker)" },
  { name: "min-workers", type: "int", metavar: "N", help: "with --engine workers: registered workers needed before ready (default: --workers, at least 1; 0: ready at once, requests fail until one registers)" },
  { name: "worker-address", type: "string", default: "tcp://127.0.0.1:*", metavar: "ADDR", help: "where workers connect (the bound endpoint is logged)" },
  { name: "worker-device", type: "string", default: "cpu", metavar: "cpu|cuda", help: "device of the workers this command starts" },
  { name: "worker-max-context", type: "int", default: 2048, metavar: "C", help: "KV positions per sequence of the workers this command starts" },
  { name: "worker-timeout", type: "number", default: 10, metavar: "SECONDS", help: "a worker silent this long is lost; its sequences move to another" },
  { name: "drafter-workers", type: "int", default: 0, metavar: "N", help: "with --drafter model: run the drafter model on N local Python workers (role drafter)" },
  { name: "drafter-worker-address", type: "string", default: "tcp://127.0.0.1:*", metavar: "ADDR", help: "where drafter workers connect" },
  { name: "step-timeout", type: "number", default: 120, metavar: "SECONDS", help: "a worker step running longer is a hung worker" },
  { name: "heartbeat-interval", type: "number", default: 1, metavar: "SECONDS", help: "how often clients must speak (announced in welcome)" },
  { name: "client-timeout", type: "number", default: 10, metavar: "SECONDS", help: "a client silent this long is lost: its requests are aborted" },
  { name: "max-message-bytes", type: "int", default: 64 * 1024 * 1024, help: "larger messages are refused with too_large" },
  { name: "max-client-backlog", type: "int", default: 100000, metavar: "MESSAGES", help: "messages kept for a client that is not reading before it is dropped" },
  { name: "send-hwm", type: "int", default: 1000, metavar: "MESSAGES", help: "ZeroMQ send high-water mark per client" },
  { name: "send-buffer", type: "int", default: -1, metavar: "BYTES", help: "kernel send buffer per connection (-1: the OS default)" },
  { name: "metrics-port", type: "int", metavar: "PORT", help: "serve Prometheus metrics on http://HOST:PORT/metrics (0: a free port; off by default)" },
  { name: "metrics-host", type: "string", default: "127.0.0.1", metavar: "HOST", help: "the address the metrics endpoint binds" },
  { name: "parent-pid", type: "int", metavar: "PID", help: "stop as on SIGTERM once process PID is gone (checked every 500 ms): a server started by a trainer dies with it" },
];

/** Predicted-vs-measured steps and decisions a `stats` reply carries (the latest). */
const STATS_SAMPLES = 64;

const USAGE = "specactor serve [--model smollm2|tiny|DIR] [--address tcp://127.0.0.1:PORT] [options]";
const SUMMARY =
  "Serves rollouts over ZeroMQ/msgpack (bridge/PROTOCOL.md) with the in-process ONNX engine and the same\n" +
  "rollout core as `specactor rollout`: a client call with the same seed, prompts and parameters\n" +
  "returns the same tokens. Prints one line containing 'ready' once it accepts requests. Stops on a\n" +
  "shutdown message, or SIGINT/SIGTERM or the end of --parent-pid (in-flight requests then end with an\n" +
  "explicit error).";

/** Flags over the config file over the defaults. */
function withConfig(argv: string[]): Parsed {
  const flags = parseArgs(argv, OPTIONS);
  const file = flags.config as string | undefined;
  if (!file) return flags;
  let cfg: unknown;
  try {
    cfg = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new UsageError(`--config ${file}: ${(e as Error).message}`);
  }
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) throw new UsageError(`--config ${file}: expected a JSON object`);
  const fromFile: string[] = [];
  for (const [k, v] of Object.entries(cfg)) {
    if (k === "config" || !OPTIONS.some((o) => o.name === k)) throw new UsageError(`--config ${file}: unknown option '${k}'`);
    fromFile.push(`--${k}=${String(v)}`);
  }
  const given = new Set(argv.filter((x) => x.startsWith("--")).map((x) => x.slice(2).split("=")[0]));
  const merged = parseArgs(fromFile, OPTIONS);
  for (const o of OPTIONS) if (given.has(o.name)) merged[o.name] = flags[o.name];
  merged.config = file;
  return merged;
}

export async function serveCommand(argv: string[]): Promise<void> {
  if (argv.includes("--help")) {
    process.stdout.write(helpText(USAGE, SUMMARY, OPTIONS));
    return;
  }
  const a = withConfig(argv);
  const choice = usage(() => speculationOf(a.mode as string, a.drafter as string | undefined, a.drafters as string | undefined));
  const mode = choice.mode;
  const drafterName = choice.drafter;
  const bounds = historyBounds(a);
  if (!POLICIES.includes(a.policy as string)) throw new UsageError(`--policy ${a.policy} is not known (${POLICIES.join(", ")})`);
  const usesModel = drafterName === "model" || (choice.drafters ?? []).includes("model");
  if ((a["drafter-threads"] as number) < 1) throw new UsageError(`--drafter-threads must be >= 1, got ${a["drafter-threads"]}`);
  for (const k of ["max-batch", "draft-len", "max-message-bytes", "max-client-backlog"]) {
    if ((a[k] as number) < 1) throw new UsageError(`--${k} must be >= 1, got ${a[k]}`);
  }
  for (const k of ["heartbeat-interval", "client-timeout"]) if (!((a[k] as number) > 0)) throw new UsageError(`--${k} must be > 0, got ${a[k]}`);
  if ((a["send-hwm"] as number) < 0) throw new UsageError(`--send-hwm must be >= 0, got ${a["send-hwm"]}`);
  if ((a["send-buffer"] as number) < -1) throw new UsageError(`--send-buffer must be >= -1, got ${a["send-buffer"]}`);
  if (a["ort-spinning"] !== "on" && a["ort-spinning"] !== "off") throw new UsageError(`--ort-spinning must be on or off, got ${a["ort-spinning"]}`);
  const address = a.address as string;
  if (!/^(tcp|ipc|inproc):\/\/.+/.test(address)) throw new UsageError(`--address ${address}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME`);

  const engineKind = a.engine as string;
  if (engineKind !== "onnx" && engineKind !== "workers") throw new UsageError(`--engine ${engineKind} is not supported (onnx, workers)`);
  if (engineKind === "onnx" && (a.workers as number) > 0) throw new UsageError("--workers needs --engine workers");
  if ((a.workers as number) < 0) throw new UsageError(`--workers must be >= 0, got ${a.workers}`);
  const draftCost = usage(() => parseDraftCost(a["draft-cost"] as string));
  const drafterWorkers = a["drafter-workers"] as number;
  if (drafterWorkers < 0) throw new UsageError(`--drafter-workers must be >= 0, got ${drafterWorkers}`);
  if (drafterWorkers > 0 && drafterName !== "model") throw new UsageError("--drafter-workers needs --mode vanilla --drafter model or --mode decoupled");
  const metricsPort = a["metrics-port"] as number | undefined;
  if (metricsPort !== undefined && (metricsPort < 0 || metricsPort > 65535)) throw new UsageError(`--metrics-port must be in [0, 65535], got ${metricsPort}`);
  const parentPid = a["parent-pid"] as number | undefined;
  if (parentPid !== undefined && parentPid < 1) throw new UsageError(`--parent-pid must be >= 1, got ${parentPid}`);
  const minWorkers = (a["min-workers"] as number | undefined) ?? Math.max(1, a.workers as number);
  if (minWorkers < 0) throw new UsageError(`--min-workers must be >= 0, got ${minWorkers}`);
  const modelDir = await resolveModel(a.model as string);
  // the model drafter's directory, checked before any engine starts (workers run torch on its hf/ form)
  const drafterModelDir = usesModel ? usage(() => drafterDir(modelDir, a["drafter-model"] as string | undefined, drafterWorkers > 0 ? "torch" : "onnx")) : undefined;
  const threads = a.threads as number | undefined;
  const log = (line: string) => process.stderr.write(`specactor serve: ${line}\n`);
  const children: ChildProcess[] = [];

  /** A pool of `role` workers on `address`, with `count` local ones started; resolves once `need` registered. */
  const startPool = async (role: "verifier" | "drafter", address: string, dir: string, count: number, need: number) => {
    const prefix = role === "verifier" ? "" : `${role} `;
    const pool = new WorkerPool({
      address,
      role,
      heartbeatIntervalS: a["heartbeat-interval"] as number,
      workerTimeoutS: a["worker-timeout"] as number,
      stepTimeoutS: a["step-timeout"] as number,
      log: (line) => log(prefix + line),
    });
    await pool.start();
    log(`${prefix}workers connect to ${pool.endpoint}`);
    const mine: ChildProcess[] = [];
    for (let i = 0; i < count; i++) {
      // each worker can hold every running sequence
      const o = { role, device: a["worker-device"] as string, threads, slots: a["max-batch"] as number, context: a["worker-max-context"] as number };
      mine.push(startWorker(pool.endpoint, dir, o));
    }
    children.push(...mine);
    // a worker we started that is dropped must not come back with stale state
    pool.onLost = (_id, pid) => mine.find((c) => c.pid === pid)?.kill("SIGKILL");
    try {
      await pool.waitForWorkers(need, 300);
    } catch (e) {
      for (const c of children) c.kill("SIGKILL");
      await pool.close();
      throw e;
    }
    return pool;
  };

  const decoupled = mode === "decoupled";
  // decoupled with the in-process drafter: the drafter's threads come out of the verifier's
  const split = decoupled && drafterWorkers === 0 ? threadSplit(threads, a["drafter-threads"] as number) : undefined;
  let engine: Engine;
  if (engineKind === "onnx") {
    // on a thread of its own: a long step must not stop the server from reading its sockets
    engine = await ThreadedEngine.load(modelDir, { threads: split?.verifier ?? threads, spinning: a["ort-spinning"] === "on" });
  } else {
    engine = await startPool("verifier", a["worker-address"] as string, modelDir, a.workers as number, minWorkers);
  }
  let drafter: Drafter | undefined;
  let spec: SpecConfig | undefined;
  const ctx = { modelDir, drafterModel: drafterModelDir, draftCost, threads: split?.drafter ?? threads, threaded: true, decoupled, ...bounds };
  if (drafterWorkers > 0) {
    const pool = await startPool("drafter", a["drafter-worker-address"] as string, drafterModelDir!, drafterWorkers, drafterWorkers);
    drafter = makeModelDrafter(pool, { ...modelDrafterOptions(draftCost), decoupled });
  } else if (mode === "specactor") {
    const cost = new StepCostModel("verifier");
    log("profiling the engine's step costs");
    await profileEngine(engine, cost);
    const subs: Drafter[] = [];
    for (const name of choice.drafters!) subs.push(await makeDrafter(name, ctx));
    drafter = new SpecActorDrafter(subs, { policy: a.policy as string, makespan: !a["no-makespan"], draftLen: a["draft-len"] as number }, undefined, cost);
    spec = { drafter, draftLen: SPECACTOR_DEFAULTS.maxDepth, maxNodes: SPECACTOR_MAX_NODES };
  } else if (mode !== "plain") {
    drafter = await makeDrafter(drafterName!, ctx);
  }
  spec ??= drafter ? { drafter, draftLen: a["draft-len"] as number } : undefined;
  const core = new RolloutCore(engine, a["max-batch"] as number, spec);
  const server = new ZmqServer({
    address,
    heartbeatIntervalS: a["heartbeat-interval"] as number,
    clientTimeoutS: a["client-timeout"] as number,
    maxMessageBytes: a["max-message-bytes"] as number,
    maxClientBacklog: a["max-client-backlog"] as number,
    sendHighWaterMark: a["send-hwm"] as number,
    sendBufferBytes: a["send-buffer"] as number,
  });
  const service = new RolloutService(core, engine, server.send, {
    heartbeatIntervalS: a["heartbeat-interval"] as number,
    clientTimeoutS: a["client-timeout"] as number,
    maxMessageBytes: a["max-message-bytes"] as number,
    server: `specactor-ts ${mode}${drafter ? `/${drafter.name}` : ""} on ${engine.info.name}`,
  });

  if (engine instanceof WorkerPool) {
    const pool = engine;
    service.extraStats = () => ({ workers: pool.workerStats(), ...pool.stats });
  } else if (drafter instanceof SpecActorDrafter) {
    // the policy's cost model (curve, error, latest predicted vs measured steps) and decisions
    const policy = drafter;
    service.extraStats = () => ({ scheduler: policy.report(STATS_SAMPLES) });
  }

  const metrics = metricsPort === undefined ? undefined : new MetricsServer(service, core, a["max-batch"] as number, drafter?.name);

  let stopping: Promise<void> | undefined;
  const stop = (how: () => Promise<void>) =>
    (stopping ??= (async () => {
      await how();
      await metrics?.close();
      await server.close();
      await drafter?.close?.();
      await engine.close();
      for (const c of children) c.kill("SIGTERM");
      process.stderr.write(`specactor serve: stopped (${JSON.stringify(service.counters)})\n`);
    })());
  let parentWatch: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve) => {
    service.onShutdown = () => void stop(async () => {}).then(resolve);
    const onSignal = (sig: string) => {
      process.stderr.write(`specactor serve: ${sig}, failing ${service.inFlight} in-flight request(s) and stopping\n`);
      void stop(() => service.shutdown(false)).then(resolve);
    };
    process.once("SIGINT", () => onSignal("SIGINT"));
    process.once("SIGTERM", () => onSignal("SIGTERM"));
    if (parentPid !== undefined) {
      const gone = parentGone(parentPid);
      parentWatch = setInterval(() => {
        if (!gone()) return;
        clearInterval(parentWatch);
        onSignal(`parent process ${parentPid} is gone`);
      }, 500);
    }
  });
  try {
    await server.start(service);
  } catch (e) {
    await engine.close();
    for (const c of children) c.kill("SIGKILL");
    throw new UsageError(`cannot bind ${address}: ${(e as Error).message}`);
  }
  if (metrics) {
    const host = a["metrics-host"] as string;
    try {
      log(`metrics on ${await metrics.listen(host, metricsPort!)}`);
    } catch (e) {
      await server.close();
      await engine.close();
      for (const c of children) c.kill("SIGKILL");
      throw new UsageError(`--metrics-port ${metricsPort}: cannot bind ${host}: ${(e as Error).message}`);
    }
  }
  process.stdout.write(`specactor serve: ready on ${server.endpoint} (protocol ${PROTOCOL_VERSION}, ${engine.info.name}, ${service.health().status})\n`);
  await done;
  clearInterval(parentWatch);
}

/**
 * Whether process `pid` has ended. A signal 0 tells whether the pid exists (EPERM: it exists but is
 * not ours); a parent that died but is not yet reaped still exists as a zombie, so when `pid` is our
 * own parent, being reparented (getppid changes) counts as its end too.
 */
function parentGone(pid: number): () => boolean {
  const direct = process.ppid === pid;
  return () => {
    if (direct && process.ppid !== pid) return true;
    try {
      process.kill(pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ESRCH";
    }
  };
}

/** A local Python engine worker connected to `endpoint`; its output goes to our stderr. */
function startWorker(endpoint: string, modelDir: string, o: { role: string; device: string; threads?: number; slots: number; context: number }): ChildProcess {
  const args = ["-m", "specactor.worker", "--connect", endpoint, "--model", modelDir, "--role", o.role, "--device", o.device, "--max-batch", String(o.slots)];
  const meta = JSON.parse(fs.readFileSync(path.join(modelDir, "onnx", "model.json"), "utf8")) as { max_context: number };
  args.push("--max-context", String(Math.min(o.context, meta.max_context)));
  if (o.threads !== undefined) args.push("--threads", String(o.threads));
  const child = spawn(pythonBin(), args, {
    cwd: projectRoot(),
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, PYTHONPATH: [path.join(projectRoot(), "python"), process.env.PYTHONPATH].filter(Boolean).join(":") },
  });
  child.on("error", (e) => process.stderr.write(`specactor serve: cannot start a worker: ${e.message}\n`));
  return child;
}
