/**
 * The rollout service: the protocol's requests (bridge/PROTOCOL.md) on top of the rollout core the
 * CLI uses, independent of the transport. It owns the mapping from a client's request ids to the
 * core's samples, coalesces each client's outputs per engine step, sequences pause / bump / resume,
 * and guarantees the protocol's ending rule: every accepted request ends with one final entry per
 * sample or with an error carrying its id.
 *
 * Seeds follow the CLI: sample i of prompt j gets deriveSeed(seed, j, i).
 */
import type { EngineInfo } from "../engine/engine";
// the engine's info is read on use: a worker pool learns it when its first worker registers
import { type Body, type Message, PROTOCOL_VERSION, type TypedArray } from "../bridge/wire";
import { RequestError, type RolloutCore, type RolloutResult, StateError } from "../rollout/core";
import { deriveSeed, freshSeed } from "../sampling/seeds";

export type Send = (client: string, type: string, body: Body, arrays?: Record<string, TypedArray>) => void;

export interface ServiceOptions {
  heartbeatIntervalS: number;
  clientTimeoutS: number;
  maxMessageBytes: number;
  /** Name of the server and engine for `welcome` and `health`. */
  server: string;
}

export class ShutdownError extends Error {}

interface Sample {
  coreId: number;
  prompt: number;
  sample: number;
  /** Tokens already sent (streaming). */
  sent: number;
  done: boolean;
}

interface ClientRequest {
  client: string;
  id: string;
  stream: boolean;
  samples: Sample[];
  open: number;
  ended: boolean;
  aborted: boolean;
}

interface Pending {
  entries: Body[];
  tokens: number[];
  logprobs: number[];
}

export interface ServiceCounters {
  requests_accepted: number;
  requests_finished: number;
  requests_aborted: number;
  requests_failed: number;
  clients_lost: number;
  bad_messages: number;
  dropped_messages: number;
  backlog_peak: number;
}

export class RolloutService {
  readonly counters: ServiceCounters = {
    requests_accepted: 0,
    requests_finished: 0,
    requests_aborted: 0,
    requests_failed: 0,
    clients_lost: 0,
    bad_messages: 0,
    dropped_messages: 0,
    backlog_peak: 0,
  };
  private readonly requests = new Map<string, ClientRequest>();
  private readonly pending = new Map<string, Pending>();
  private flushScheduled = false;
  private shuttingDown = false;
  private readonly started = performance.now();
  private drainWaiters: (() => void)[] = [];
  /** Set by the transport: how many clients are connected. */
  clientCount = (): number => 0;
  /** Engine-specific additions to `stats` (e.g. the worker pool's workers and failovers). */
  extraStats?: () => Body;
  /** Called once after `bye` when the service has shut down. */
  onShutdown?: () => void;

  constructor(
    private readonly core: RolloutCore,
    private readonly engine: { readonly info: EngineInfo; kvBytes(): number; settledKvBytes(): Promise<number> },
    private readonly send: Send,
    private readonly opts: ServiceOptions,
  ) {
    core.onStep = () => this.flush();
  }

  get inFlight(): number {
    return this.requests.size;
  }

  handle(client: string, msg: Message): void {
    const b = msg.body;
    switch (msg.type) {
      case "hello":
        if (b.protocol !== PROTOCOL_VERSION) {
          return this.error(client, "version_mismatch", `this server speaks protocol ${PROTOCOL_VERSION}, the client ${b.protocol}`, { type: "hello" });
        }
        return this.reply(client, "welcome", {
          protocol: PROTOCOL_VERSION,
          server: this.opts.server,
          model: { name: this.engine.info.model, vocab_size: this.engine.info.vocabSize, max_context: this.engine.info.maxContext, eos_ids: [...this.engine.info.eosIds] },
          heartbeat_interval_s: this.opts.heartbeatIntervalS,
          client_timeout_s: this.opts.clientTimeoutS,
          max_message_bytes: this.opts.maxMessageBytes,
          weight_version: this.core.version,
        });
      case "generate":
        return this.generate(client, b);
      case "abort":
        return this.abort(client, b.ids as string[]);
      // a client that asks right after its result sees the cache after that result's releases
      case "health":
        void this.engine.settledKvBytes().then((kv) => this.reply(client, "health", { ...this.health(), kv_bytes: kv }));
        return;
      case "stats":
        void this.engine.settledKvBytes().then((kv) => this.reply(client, "stats", { ...this.stats(), kv_bytes: kv }));
        return;
      case "ping":
        return this.reply(client, "pong", { t: b.t ?? null });
      case "pause":
        void this.core.pause((b.mode as "drain" | "abort" | undefined) ?? "drain").then(() => this.reply(client, "paused", { weight_version: this.core.version }));
        return;
      case "bump":
        return this.bump(client, b.version as number | null | undefined);
      case "resume":
        this.core.resume();
        return this.reply(client, "resumed", { weight_version: this.core.version });
      case "release_memory":
        if (!this.core.isPaused) return this.error(client, "not_paused", "release_memory needs a paused server (send pause first)", { type: "release_memory" });
        void this.core.releaseMemory().then(
          (kv) => this.reply(client, "memory_released", { kv_bytes: kv }),
          (e: Error) => this.error(client, e instanceof StateError ? "not_paused" : "engine_failed", e.message, { type: "release_memory" }),
        );
        return;
      case "restore_memory":
        void this.core.restoreMemory().then(
          (kv) => this.reply(client, "memory_restored", { kv_bytes: kv }),
          (e: Error) => this.error(client, "engine_failed", e.message, { type: "restore_memory" }),
        );
        return;
      case "clear_kv":
        return this.reply(client, "kv_cleared", { sequences: this.core.clearKv() });
      case "shutdown":
        void this.shutdown(b.drain !== false).then(() => {
          this.reply(client, "bye", {});
          this.onShutdown?.();
        });
        return;
      default:
        return this.error(client, "unknown_type", `'${msg.type}' is not a client message`, { type: msg.type });
    }
  }

  /** The transport lost `client`: abort its requests silently and free their engine state. */
  clientLost(client: string): void {
    this.counters.clients_lost++;
    this.pending.delete(client);
    for (const r of [...this.requests.values()]) {
      if (r.client !== client) continue;
      this.counters.requests_aborted++;
      this.close(r);
    }
  }

  /**
   * Stops accepting work and ends every request: `drain` lets them finish (resuming a paused core),
   * otherwise each fails with `shutting_down`.
   */
  async shutdown(drain: boolean): Promise<void> {
    this.shuttingDown = true;
    if (drain) {
      this.core.resume();
      if (this.requests.size > 0) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    } else {
      this.core.failAll(new ShutdownError("the server is shutting down"));
    }
    await this.core.whenIdle();
    this.flush();
  }

  health(): Body {
    const { queued, running } = this.core.counts;
    return {
      status: this.shuttingDown ? "draining" : this.core.isPaused ? "paused" : "ok",
      protocol: PROTOCOL_VERSION,
      weight_version: this.core.version,
      running,
      queued,
      clients: this.clientCount(),
      uptime_s: this.uptime(),
      engine: this.engine.info.name,
      kv_bytes: this.engine.kvBytes(),
      memory: this.core.memoryState,
    };
  }

  stats(): Body {
    const s = this.core.stats;
    const metrics = this.core.drafterMetrics();
    const { queued, running } = this.core.counts;
    return {
      uptime_s: this.uptime(),
      weight_version: this.core.version,
      engine_steps: s.engineSteps,
      seq_steps: s.seqSteps,
      generated_tokens: s.generatedTokens,
      peak_batch: s.peakBatch,
      running,
      queued,
      clients: this.clientCount(),
      in_flight_requests: this.requests.size,
      kv_bytes: this.engine.kvBytes(),
      memory: this.core.memoryState,
      ...this.counters,
      ...this.extraStats?.(),
      drafter: s.drafter
        ? {
            verify_steps: s.drafter.verifySeqSteps,
            proposed_tokens: s.drafter.proposedTokens,
            accepted_tokens: s.drafter.acceptedTokens,
            errors: s.drafter.errors,
            ...(metrics ? { metrics } : {}),
          }
        : null,
    };
  }

  // ---- requests ---------------------------------------------------------------------------------

  private generate(client: string, b: Body): void {
    const id = b.id as string;
    const fail = (code: string, message: string) => this.error(client, code, message, { id, type: "generate" });
    if (this.shuttingDown) return fail("shutting_down", "the server is shutting down");
    if (this.engine.info.vocabSize === 0) return fail("engine_failed", "no engine worker has registered yet");
    const key = requestKey(client, id);
    if (this.requests.has(key)) return fail("duplicate_id", `request '${id}' is already in flight`);
    const lengths = b.prompt_lengths as number[];
    const flat = b.prompt_ids as Int32Array;
    const n = (b.n as number | undefined) ?? 1;
    const maxTokens = b.max_tokens as number;
    const seed = (b.seed as number | null | undefined) ?? freshSeed();
    const historyKey = (b.history_key as string | null | undefined) ?? undefined;
    const stopIds = (b.stop_token_ids as number[] | null | undefined) ?? undefined;
    // explicit per-sample seeds (prompt-major, as the samples are numbered) take the place of the derivation
    const seeds = (b.seeds as number[] | null | undefined) ?? undefined;
    // ranges are the schema's (wire.ts); the core checks them again with the prompts below
    const params = {
      temperature: (b.temperature as number | undefined) ?? 1,
      topP: (b.top_p as number | undefined) ?? 1,
      topK: (b.top_k as number | undefined) ?? -1,
    };
    if (lengths.length >= 2 ** 32 || n >= 2 ** 32) return fail("invalid_request", "too many prompts or samples");
    if (seeds && seeds.length !== lengths.length * n) {
      return fail("invalid_request", `seeds holds ${seeds.length} seeds for ${lengths.length} prompt(s) x ${n} samples`);
    }
    const prompts: number[][] = [];
    let at = 0;
    for (const len of lengths) {
      prompts.push(Array.from(flat.subarray(at, at + len)));
      at += len;
    }
    const reqs = prompts.flatMap((promptIds, j) =>
      Array.from({ length: n }, (_, i) => ({ j, i, req: { promptIds, params, seed: seeds ? seeds[j * n + i] : deriveSeed(seed, j, i), maxTokens, historyKey, stopIds } })),
    );
    for (const { j, req } of reqs) {
      try {
        this.core.check(req);
      } catch (e) {
        if (e instanceof RequestError || e instanceof RangeError) return fail("invalid_request", `prompt ${j}: ${e.message}`);
        throw e;
      }
    }
    const r: ClientRequest = { client, id, stream: b.stream === true, samples: [], open: reqs.length, ended: false, aborted: false };
    this.requests.set(key, r);
    this.counters.requests_accepted++;
    this.reply(client, "accepted", { id, seed, samples: reqs.length });
    for (const { j, i, req } of reqs) {
      const s: Sample = { coreId: -1, prompt: j, sample: i, sent: 0, done: false };
      r.samples.push(s);
      s.coreId = this.core.start(req, {
        tokens: r.stream ? (t, l) => this.streamed(r, s, t, l) : undefined,
        finish: (res) => this.finished(r, s, res),
        fail: (e) => this.failed(r, s, e),
      });
    }
  }

  private abort(client: string, ids: string[]): void {
    const found: string[] = [];
    const unknown: string[] = [];
    for (const id of ids) {
      const r = this.requests.get(requestKey(client, id));
      if (!r) {
        unknown.push(id);
        continue;
      }
      found.push(id);
      for (const s of r.samples) if (!s.done) this.core.abort(s.coreId);
    }
    this.reply(client, "aborted", { ids: found, unknown });
  }

  private bump(client: string, version: number | null | undefined): void {
    const current = this.core.version;
    if (!this.core.isPaused) return this.error(client, "not_paused", "bump needs a paused server (send pause first)", { type: "bump" });
    const next = version ?? current + 1;
    if (next <= current) return this.error(client, "bad_version", `the weight version must increase: ${next} <= ${current}`, { type: "bump" });
    try {
      this.core.setWeightVersion(next);
    } catch (e) {
      return this.error(client, "not_paused", `${(e as Error).message}; wait for the paused reply`, { type: "bump" });
    }
    this.reply(client, "bumped", { weight_version: next });
  }

  private streamed(r: ClientRequest, s: Sample, tokens: readonly number[], logprobs: readonly number[]): void {
    if (r.ended) return;
    s.sent += tokens.length;
    this.output(r.client, { id: r.id, prompt: s.prompt, sample: s.sample, num_tokens: tokens.length, finished: false }, tokens, logprobs);
  }

  private finished(r: ClientRequest, s: Sample, res: RolloutResult): void {
    s.done = true;
    if (r.ended) return;
    const tokens = res.tokenIds.slice(s.sent);
    this.output(
      r.client,
      {
        id: r.id,
        prompt: s.prompt,
        sample: s.sample,
        num_tokens: tokens.length,
        finished: true,
        finish_reason: res.finishReason,
        seed: res.seed,
        weight_version: res.weightVersion,
        engine_steps: res.engineSteps,
        accepted_draft_tokens: res.acceptedDraftTokens,
        draft_tokens: res.draftTokens,
      },
      tokens,
      res.logprobs.slice(s.sent),
    );
    if (res.finishReason === "abort") r.aborted = true;
    if (--r.open === 0) {
      if (r.aborted) this.counters.requests_aborted++;
      else this.counters.requests_finished++;
      this.close(r);
    }
  }

  /** The first failing sample ends the request with one error; its other samples are aborted quietly. */
  private failed(r: ClientRequest, s: Sample, e: Error): void {
    s.done = true;
    if (r.ended) return;
    this.counters.requests_failed++;
    const code = e instanceof ShutdownError ? "shutting_down" : "engine_failed";
    this.error(r.client, code, e.message, { id: r.id, type: "generate" });
    this.close(r);
  }

  /** Forgets the request and aborts whatever of it still runs (their endings are ignored). */
  private close(r: ClientRequest): void {
    r.ended = true;
    this.requests.delete(requestKey(r.client, r.id));
    for (const s of r.samples) if (!s.done) this.core.abort(s.coreId);
    if (this.requests.size === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  // ---- output -----------------------------------------------------------------------------------

  private output(client: string, entry: Body, tokens: readonly number[], logprobs: readonly number[]): void {
    let p = this.pending.get(client);
    if (!p) this.pending.set(client, (p = { entries: [], tokens: [], logprobs: [] }));
    p.entries.push(entry);
    for (let i = 0; i < tokens.length; i++) {
      p.tokens.push(tokens[i]);
      p.logprobs.push(logprobs[i]);
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** One `outputs` message per client for everything produced since the last flush (one engine step). */
  private flush(): void {
    this.flushScheduled = false;
    for (const client of [...this.pending.keys()]) this.flushClient(client);
  }

  private flushClient(client: string): void {
    const p = this.pending.get(client);
    if (!p) return;
    this.pending.delete(client);
    this.send(client, "outputs", { outputs: p.entries }, { token_ids: Int32Array.from(p.tokens), log_probs: Float32Array.from(p.logprobs) });
  }

  /** Replies go after the client's buffered outputs, so a client sees its messages in order. */
  private reply(client: string, type: string, body: Body): void {
    this.flushClient(client);
    this.send(client, type, body);
  }

  error(client: string, code: string, message: string, extra: { id?: string; type?: string } = {}): void {
    this.reply(client, "error", { code, message, ...extra });
  }

  private uptime(): number {
    return Math.round(performance.now() - this.started) / 1000;
  }
}

function requestKey(client: string, id: string): string {
  return `${client}\u0000${id}`;
}
