/**
 * An engine made of Python engine workers (bridge/PROTOCOL.md section 5), reached over a ZeroMQ
 * ROUTER the server binds. Workers register; each sequence lives on one worker (where its KV cache
 * is); a step sends one message per worker holding sequences of the step and waits for all replies.
 *
 * Failover. The pool remembers, per sequence, the tokens whose KV the worker holds (appended tokens
 * plus accepted draft tokens). When a worker dies (socket failure, heartbeats missing for the worker
 * timeout, or a step running past the step timeout), its sequences move to the least-loaded live
 * worker, which re-prefills each from those tokens and reruns the step. Every sample is a pure
 * function of (seed, position) and the tokens before it, so the rerun emits exactly what the dead
 * worker would have. With no live worker left, the step fails with an EngineError (the requests end
 * with an explicit error, never silence).
 */
import * as zmq from "zeromq";
import { type Body, PROTOCOL_VERSION, WireError, decode, encode } from "../bridge/wire";
import { type Engine, EngineError, type EngineInfo, type SeqResult, type SeqStep } from "./engine";
import { EMPTY_TRIE } from "./trie";

export interface WorkerPoolOptions {
  address: string;
  /** The role this pool's workers register with: verifiers, or model drafters (a model drafter's engine: CoupledModelDrafter or DecoupledModelDrafter). */
  role?: "verifier" | "drafter";
  heartbeatIntervalS: number;
  workerTimeoutS: number;
  /** A step running longer than this means a hung worker. */
  stepTimeoutS: number;
  log?: (line: string) => void;
}

export interface WorkerStats {
  worker_id: string;
  model: string;
  device: string;
  pid: number | null;
  steps: number;
  sequences: number;
}

interface Pending {
  stepId: number;
  resolve: (r: SeqResult[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** A `release_memory` or `restore_memory` waiting for the worker's answer. */
interface MemoryPending {
  type: "release_memory" | "restore_memory";
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface Worker {
  key: string;
  routingId: Buffer;
  id: string;
  model: string;
  device: string;
  pid: number | null;
  capacity: { max_batch: number; max_context: number };
  vocabSize: number;
  eosIds: number[];
  lastSeen: number;
  lastSent: number;
  alive: boolean;
  pending?: Pending;
  memoryPending?: MemoryPending;
  /** The worker's KV cache size, as it last reported it (register, memory replies). */
  kvBytes: number;
  steps: number;
  /** Sequences whose KV the worker holds. */
  seqs: Set<number>;
  /** Sequences assigned but not yet stepped (balances a batch of new ones). */
  placed: number;
}

export class WorkerLost extends Error {}

export class WorkerPool implements Engine {
  info: EngineInfo = { name: "workers (none registered)", model: "", vocabSize: 0, maxContext: 0, eosIds: [] };
  readonly stats = { workers_registered: 0, workers_lost: 0, steps_rerun: 0, sequences_moved: 0 };
  private readonly sock: zmq.Router;
  private readonly workers = new Map<string, Worker>();
  private readonly home = new Map<number, Worker>();
  /** Tokens whose KV the sequence's worker holds, to re-prefill elsewhere. */
  private readonly cached = new Map<number, number[]>();
  private nextStepId = 1;
  private nextWorker = 1;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private lastWatch = 0;
  private sending: Promise<void> = Promise.resolve();
  private registrationWaiters: (() => void)[] = [];
  private tail: Promise<unknown> = Promise.resolve();
  /** Memory released: a worker that registers meanwhile is told to release its cache too. */
  private released = false;
  /** A worker was dropped (whoever started its process may kill it: it must not return with stale state). */
  onLost?: (workerId: string, pid: number | null) => void;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.sock = new zmq.Router({ mandatory: true, sendTimeout: 0, linger: 0, sendHighWaterMark: 10000, receiveHighWaterMark: 0 });
  }

  async start(): Promise<void> {
    await this.sock.bind(this.opts.address);
    this.lastWatch = Date.now();
    this.timer = setInterval(() => this.watch(), this.watchIntervalMs);
    void this.receive();
  }

  private get watchIntervalMs(): number {
    return Math.max(20, (this.opts.heartbeatIntervalS * 1000) / 2);
  }

  get endpoint(): string {
    return this.sock.lastEndpoint ?? this.opts.address;
  }

  get live(): Worker[] {
    return [...this.workers.values()].filter((w) => w.alive);
  }

  workerStats(): WorkerStats[] {
    return this.live.map((w) => ({ worker_id: w.id, model: w.model, device: w.device, pid: w.pid, steps: w.steps, sequences: w.seqs.size }));
  }

  /** Resolves once `count` workers are registered (or rejects after `timeoutS`). */
  async waitForWorkers(count: number, timeoutS: number): Promise<void> {
    const deadline = Date.now() + timeoutS * 1000;
    while (this.live.length < count) {
      if (Date.now() > deadline) throw new EngineError(`${this.live.length} of ${count} engine workers registered within ${timeoutS}s`);
      await new Promise<void>((resolve) => {
        this.registrationWaiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  step(batch: SeqStep[]): Promise<SeqResult[]> {
    const run = this.tail.then(() => (batch.length === 0 ? [] : this.runStep(batch)));
    this.tail = run.catch(() => undefined);
    return run;
  }

  cachedLength(seqId: number): number {
    return this.cached.get(seqId)?.length ?? 0;
  }

  truncate(seqId: number, length: number): void {
    const c = this.cached.get(seqId);
    if (!c) throw new EngineError(`unknown sequence ${seqId}`);
    if (!Number.isInteger(length) || length < 0 || length > c.length) throw new EngineError(`cannot truncate sequence ${seqId} of length ${c.length} to ${length}`);
    c.length = length;
    const w = this.home.get(seqId);
    if (w?.alive) this.send(w, "truncate", { seq: seqId, length });
  }

  release(seqId: number): void {
    this.cached.delete(seqId);
    const w = this.home.get(seqId);
    this.home.delete(seqId);
    if (!w) return;
    w.seqs.delete(seqId);
    if (w.alive) this.send(w, "release", { seqs: [seqId] });
  }

  sequences(): number[] {
    return [...this.cached.keys()];
  }

  kvBytes(): number {
    return this.live.reduce((n, w) => n + w.kvBytes, 0);
  }

  /** A torch worker's cache is allocated whole, so a release does not change it: no round trip needed. */
  async settledKvBytes(): Promise<number> {
    return this.kvBytes();
  }

  /** Every live worker frees its KV cache (ordered after the steps before); a worker lost meanwhile is skipped. */
  releaseMemory(): Promise<number> {
    this.released = true;
    return this.memoryOp("release_memory");
  }

  restoreMemory(): Promise<number> {
    this.released = false;
    return this.memoryOp("restore_memory");
  }

  private memoryOp(type: MemoryPending["type"]): Promise<number> {
    const run = this.tail.then(async () => {
      await Promise.all(this.live.map((w) => this.memoryOn(w, type).catch((e: unknown) => {
        if (!(e instanceof WorkerLost)) throw e;
      })));
      return this.kvBytes();
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private memoryOn(w: Worker, type: MemoryPending["type"]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.lose(w, `${type} ran past ${this.opts.stepTimeoutS}s`), this.opts.stepTimeoutS * 1000);
      w.memoryPending = { type, resolve, reject, timer };
      this.send(w, type, {});
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    for (const w of this.live) {
      w.alive = false;
      w.pending?.reject(new EngineError("the server is closing"));
      if (w.pending) clearTimeout(w.pending.timer);
      w.memoryPending?.reject(new EngineError("the server is closing"));
      if (w.memoryPending) clearTimeout(w.memoryPending.timer);
    }
    this.sock.close();
  }

  // ---- steps ------------------------------------------------------------------------------------

  private async runStep(batch: SeqStep[]): Promise<SeqResult[]> {
    const results = new Map<number, SeqResult>();
    let todo = batch;
    for (let attempt = 0; todo.length > 0; attempt++) {
      if (attempt > 8) throw new EngineError("engine workers keep failing; giving up on the step");
      const groups = new Map<Worker, { step: SeqStep; sent: SeqStep }[]>();
      for (const step of todo) {
        let w = this.home.get(step.seqId);
        if (!w || !w.alive) w = this.place(step.seqId);
        // a sequence new to its worker re-prefills the KV the pool knows it had elsewhere
        const known = this.cached.get(step.seqId) ?? [];
        const sent = w.seqs.has(step.seqId) || known.length === 0 ? step : { ...step, append: [...known, ...step.append] };
        let g = groups.get(w);
        if (!g) groups.set(w, (g = []));
        g.push({ step, sent });
      }
      const failed: SeqStep[] = [];
      await Promise.all(
        [...groups].map(async ([w, group]) => {
          let out: SeqResult[];
          try {
            out = await this.stepOn(w, group.map((x) => x.sent));
          } catch (e) {
            if (!(e instanceof WorkerLost)) throw e;
            for (const x of group) failed.push(x.step);
            return;
          }
          group.forEach(({ step }, i) => {
            const r = out[i];
            if (r.seqId !== step.seqId) throw new EngineError(`worker ${w.id} answered for sequence ${r.seqId} instead of ${step.seqId}`);
            if (!w.seqs.has(step.seqId)) w.placed = Math.max(0, w.placed - 1);
            w.seqs.add(step.seqId);
            // the worker now holds the known tokens, this step's appended ones and the accepted drafts
            let known = this.cached.get(step.seqId);
            if (!known) this.cached.set(step.seqId, (known = []));
            known.push(...step.append, ...r.tokens.slice(0, r.accepted));
            results.set(step.seqId, r);
          });
        }),
      );
      if (failed.length > 0) {
        if (this.live.length === 0) throw new EngineError(`every engine worker is lost; ${failed.length} sequence(s) cannot continue`);
        this.stats.steps_rerun++;
      }
      todo = failed;
    }
    return batch.map((s) => results.get(s.seqId)!);
  }

  /** The least-loaded live worker takes the sequence. */
  private place(seqId: number): Worker {
    const live = this.live;
    if (live.length === 0) throw new EngineError("no engine worker is registered");
    const load = (x: Worker) => x.seqs.size + x.placed;
    const room = live.filter((x) => load(x) < x.capacity.max_batch);
    if (room.length === 0) throw new EngineError(`every engine worker is full (${live.length} worker(s))`);
    const w = room.reduce((a, b) => (load(b) < load(a) ? b : a));
    w.placed++;
    this.home.set(seqId, w);
    if (this.cached.has(seqId)) this.stats.sequences_moved++;
    return w;
  }

  private stepOn(w: Worker, steps: SeqStep[]): Promise<SeqResult[]> {
    const stepId = this.nextStepId++;
    const appendIds: number[] = [];
    const trieTokens: number[] = [];
    const seqs = steps.map((s) => {
      const trie = s.trie ?? EMPTY_TRIE;
      appendIds.push(...s.append);
      trieTokens.push(...trie.tokens);
      return {
        seq: s.seqId,
        num_append: s.append.length,
        trie_parents: trie.parents,
        temperature: s.params.temperature,
        top_p: s.params.topP,
        top_k: s.params.topK,
        seed: s.seed,
        max_emit: s.maxEmit,
        // optional on the wire: a step without stop ids is what older workers already understand
        ...(s.stopIds && s.stopIds.length > 0 ? { stop_ids: [...s.stopIds] } : {}),
      };
    });
    return new Promise<SeqResult[]>((resolve, reject) => {
      const timer = setTimeout(() => this.lose(w, `step ${stepId} ran past ${this.opts.stepTimeoutS}s`), this.opts.stepTimeoutS * 1000);
      w.pending = { stepId, resolve, reject, timer };
      this.send(w, "step", { step_id: stepId, seqs }, { append_ids: Int32Array.from(appendIds), trie_tokens: Int32Array.from(trieTokens) });
    });
  }

  // ---- socket -----------------------------------------------------------------------------------

  /**
   * Sends are serialised (zeromq.js allows one in flight) and never wait: the ROUTER runs with
   * ROUTER_MANDATORY and a zero send timeout, so a message to a worker that is gone, or that stopped
   * reading, fails at once and the worker is lost, instead of blocking every other worker's messages.
   */
  private send(w: Worker, type: string, body: Body, arrays?: Record<string, Int32Array>): void {
    w.lastSent = Date.now();
    const frames = [w.routingId, ...encode(type, body, arrays)];
    this.sending = this.sending.then(async () => {
      if (this.closed) return;
      try {
        await this.sock.send(frames);
      } catch (e) {
        this.lose(w, `send failed: ${(e as { code?: string }).code ?? (e as Error).message}`);
      }
    });
  }

  private async receive(): Promise<void> {
    try {
      for await (const [routingId, ...frames] of this.sock) this.onMessage(routingId, frames);
    } catch (e) {
      if (!this.closed) this.opts.log?.(`worker socket failed: ${(e as Error).message}`);
    }
  }

  private onMessage(routingId: Buffer, frames: Buffer[]): void {
    const key = routingId.toString("hex");
    const w = this.workers.get(key);
    if (w) w.lastSeen = Date.now();
    let type: string;
    let body: Body;
    try {
      ({ type, body } = decode(frames));
    } catch (e) {
      this.opts.log?.(`bad message from worker ${w?.id ?? key}: ${e instanceof WireError ? e.code : ""} ${(e as Error).message}`);
      return;
    }
    if (type === "register") return this.register(routingId, key, body);
    if (!w || !w.alive) return; // a worker already dropped: it must register again
    switch (type) {
      case "heartbeat":
        return;
      case "step_result":
        return this.onResult(w, body);
      case "memory_released":
      case "memory_restored": {
        w.kvBytes = body.kv_bytes as number;
        const m = w.memoryPending;
        if (m && type === (m.type === "release_memory" ? "memory_released" : "memory_restored")) {
          w.memoryPending = undefined;
          clearTimeout(m.timer);
          m.resolve();
        }
        return;
      }
      case "error": {
        const p = w.pending;
        const m = w.memoryPending;
        if (p && body.step_id === p.stepId) {
          w.pending = undefined;
          clearTimeout(p.timer);
          p.reject(new EngineError(`worker ${w.id}: ${String(body.code)}: ${String(body.message)}`));
        } else if (m && body.type === m.type) {
          w.memoryPending = undefined;
          clearTimeout(m.timer);
          m.reject(new EngineError(`worker ${w.id}: ${m.type}: ${String(body.code)}: ${String(body.message)}`));
        } else this.opts.log?.(`worker ${w.id} error: ${String(body.code)}: ${String(body.message)}`);
        return;
      }
      default:
        this.opts.log?.(`worker ${w.id} sent an unexpected '${type}'`);
    }
  }

  private register(routingId: Buffer, key: string, b: Body): void {
    const cap = b.capacity as { max_batch?: unknown; max_context?: unknown } | undefined;
    const problem =
      b.protocol !== PROTOCOL_VERSION
        ? `protocol ${String(b.protocol)} (the server speaks ${PROTOCOL_VERSION})`
        : b.role !== (this.opts.role ?? "verifier")
          ? `role '${String(b.role)}' (this address takes ${this.opts.role ?? "verifier"}s)`
          : typeof b.vocab_size !== "number" || !Array.isArray(b.eos_ids) || typeof cap?.max_context !== "number" || typeof cap?.max_batch !== "number"
            ? "register needs vocab_size, eos_ids and capacity {max_batch, max_context}"
            : this.live.length > 0 && (b.vocab_size !== this.info.vocabSize || b.model !== this.info.model)
              ? `model ${String(b.model)} (vocab ${String(b.vocab_size)}) differs from the pool's ${this.info.model} (vocab ${this.info.vocabSize})`
              : undefined;
    if (problem) {
      const frames = [routingId, ...encode("error", { code: "invalid_request", message: `cannot register: ${problem}` })];
      this.sending = this.sending.then(() => this.sock.send(frames).catch(() => undefined));
      return;
    }
    const old = this.workers.get(key);
    if (old?.alive) this.lose(old, "registered again");
    const w: Worker = {
      key,
      routingId,
      id: `w${this.nextWorker++}`,
      model: String(b.model),
      device: String(b.device),
      pid: typeof b.pid === "number" ? b.pid : null,
      capacity: { max_batch: cap!.max_batch as number, max_context: cap!.max_context as number },
      vocabSize: b.vocab_size as number,
      eosIds: b.eos_ids as number[],
      lastSeen: Date.now(),
      lastSent: Date.now(),
      alive: true,
      kvBytes: typeof b.kv_bytes === "number" ? b.kv_bytes : 0,
      steps: 0,
      seqs: new Set(),
      placed: 0,
    };
    this.workers.set(key, w);
    this.stats.workers_registered++;
    const live = this.live;
    this.info = {
      name: `torch ${this.opts.role ?? "verifier"} workers (${live.length} x ${w.device}) ${w.model}`,
      model: w.model,
      vocabSize: w.vocabSize,
      maxContext: Math.min(...live.map((x) => x.capacity.max_context)),
      eosIds: w.eosIds,
    };
    this.send(w, "registered", { worker_id: w.id, heartbeat_interval_s: this.opts.heartbeatIntervalS, worker_timeout_s: this.opts.workerTimeoutS });
    if (this.released) this.send(w, "release_memory", {}); // its reply updates kvBytes
    this.opts.log?.(`worker ${w.id} registered (${w.model} on ${w.device}, pid ${w.pid ?? "?"})`);
    for (const r of this.registrationWaiters.splice(0)) r();
  }

  private onResult(w: Worker, b: Body): void {
    const p = w.pending;
    if (!p || b.step_id !== p.stepId) {
      this.opts.log?.(`worker ${w.id} answered step ${String(b.step_id)}, which it was not running`);
      return;
    }
    w.pending = undefined;
    clearTimeout(p.timer);
    try {
      const tokens = b.token_ids as Int32Array;
      const logprobs = b.log_probs as Float32Array;
      const entries = b.results as { seq: number; num_tokens: number; accepted: number }[];
      let at = 0;
      const out = entries.map((e) => {
        const r: SeqResult = { seqId: e.seq, tokens: Array.from(tokens.subarray(at, at + e.num_tokens)), logprobs: Array.from(logprobs.subarray(at, at + e.num_tokens)), accepted: e.accepted };
        at += e.num_tokens;
        return r;
      });
      if (!(tokens instanceof Int32Array) || at !== tokens.length) throw new Error("token counts do not add up");
      w.steps++;
      p.resolve(out);
    } catch (e) {
      p.reject(new EngineError(`worker ${w.id} sent a malformed step_result: ${(e as Error).message}`));
    }
  }

  /** Heartbeats both ways: idle workers hear from us; silent workers are lost. */
  private watch(): void {
    const now = Date.now();
    // time the event loop spent blocked does not count against workers (their heartbeats wait unread)
    const stall = now - this.lastWatch - this.watchIntervalMs;
    this.lastWatch = now;
    if (stall > this.watchIntervalMs) {
      for (const w of this.live) w.lastSeen += stall;
      return;
    }
    for (const w of this.live) {
      if (now - w.lastSeen > this.opts.workerTimeoutS * 1000) this.lose(w, `no heartbeat for ${this.opts.workerTimeoutS}s`);
      else if (now - w.lastSent > this.opts.heartbeatIntervalS * 1000) this.send(w, "heartbeat", {});
    }
  }

  private lose(w: Worker, why: string): void {
    if (!w.alive) return;
    w.alive = false;
    this.stats.workers_lost++;
    this.opts.log?.(`worker ${w.id} lost (${why}); ${w.seqs.size} sequence(s) move`);
    for (const s of w.seqs) if (this.home.get(s) === w) this.home.delete(s);
    w.seqs.clear();
    const p = w.pending;
    w.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new WorkerLost(`worker ${w.id} lost: ${why}`));
    }
    const m = w.memoryPending;
    w.memoryPending = undefined;
    if (m) {
      clearTimeout(m.timer);
      m.reject(new WorkerLost(`worker ${w.id} lost: ${why}`));
    }
    this.onLost?.(w.id, w.pid);
  }
}
