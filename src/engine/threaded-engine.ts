/**
 * The in-process ONNX engine, run on a worker thread of its own.
 *
 * onnxruntime-node runs a session synchronously: on the server's main thread a long step (a large
 * prefill takes seconds on a CPU) would stop it from reading its sockets, answering pings or taking
 * aborts. Here the main thread only posts steps and receives emitted tokens; the KV cache, the
 * session and the sampling pool live on the engine thread, so no cache crosses threads.
 *
 * `cachedLength`, `truncate` and `release` are synchronous in the Engine interface: the wrapper
 * tracks cached lengths itself (a step caches the appended tokens plus the accepted draft tokens) and
 * forwards truncates and releases, which the engine thread applies in order after the steps before.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { type Engine, EngineError, type EngineInfo, type SeqResult, type SeqStep } from "./engine";

type Reply = { id: number; results?: SeqResult[]; error?: string; info?: EngineInfo; kvBytes?: number };

export class ThreadedEngine implements Engine {
  private readonly lengths = new Map<number, number>();
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private failure?: Error;
  /** The engine thread's cache size as of its last message. */
  private kv = 0;

  private constructor(
    private readonly worker: Worker,
    readonly info: EngineInfo,
  ) {
    worker.on("message", (m: Reply) => {
      if (m.kvBytes !== undefined) this.kv = m.kvBytes;
      if (m.id === 0) return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new EngineError(m.error));
      else p?.resolve(m);
    });
  }

  /** Loads `modelDir` on a new engine thread. */
  static async load(modelDir: string, opts: { threads?: number; spinning?: boolean } = {}): Promise<ThreadedEngine> {
    const script = path.join(__dirname, "threaded-engine-worker.js");
    if (!fs.existsSync(script)) throw new EngineError(`the engine thread needs the compiled ${script} (run \`make setup\`)`);
    const worker = new Worker(script, { workerData: { modelDir, threads: opts.threads, spinning: opts.spinning } });
    const info = await new Promise<EngineInfo>((resolve, reject) => {
      worker.once("message", (m: Reply) => (m.error !== undefined ? reject(new EngineError(m.error)) : resolve(m.info!)));
      worker.once("error", reject);
    });
    const engine = new ThreadedEngine(worker, info);
    worker.on("error", (e) => engine.fail(e));
    worker.on("exit", (code) => code !== 0 && engine.fail(new EngineError(`the engine thread exited with code ${code}`)));
    return engine;
  }

  async step(batch: SeqStep[]): Promise<SeqResult[]> {
    const { results } = await this.call({ type: "step", batch });
    results!.forEach((r, i) => this.lengths.set(r.seqId, this.cachedLength(r.seqId) + batch[i].append.length + r.accepted));
    return results!;
  }

  cachedLength(seqId: number): number {
    return this.lengths.get(seqId) ?? 0;
  }

  truncate(seqId: number, length: number): void {
    const current = this.lengths.get(seqId);
    if (current === undefined) throw new EngineError(`unknown sequence ${seqId}`);
    if (!Number.isInteger(length) || length < 0 || length > current) throw new EngineError(`cannot truncate sequence ${seqId} of length ${current} to ${length}`);
    this.lengths.set(seqId, length);
    this.post({ type: "truncate", seqId, length });
  }

  release(seqId: number): void {
    this.lengths.delete(seqId);
    this.post({ type: "release", seqId });
  }

  sequences(): number[] {
    return [...this.lengths.keys()];
  }

  kvBytes(): number {
    return this.kv;
  }

  /** The engine thread answers in arrival order, so its reply comes after the releases posted before. */
  async settledKvBytes(): Promise<number> {
    return (await this.call({ type: "kv_bytes" })).kvBytes!;
  }

  async releaseMemory(): Promise<number> {
    if (this.lengths.size > 0) throw new EngineError(`cannot release the KV cache while ${this.lengths.size} sequence(s) hold it`);
    return (await this.call({ type: "release_memory" })).kvBytes!;
  }

  async restoreMemory(): Promise<number> {
    return (await this.call({ type: "restore_memory" })).kvBytes!;
  }

  async close(): Promise<void> {
    if (!this.failure) await this.call({ type: "close" }).catch(() => undefined);
    await this.worker.terminate();
  }

  private call(msg: Record<string, unknown>): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  private post(msg: Record<string, unknown>): void {
    if (!this.failure) this.worker.postMessage({ ...msg, id: 0 });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}
