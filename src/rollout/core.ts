/**
 * The rollout core: continuous batching over one engine, plain or speculative. The CLI drives it
 * today and the server will drive the same object, so there is one path from request to tokens.
 *
 * Each loop iteration admits queued requests up to `maxBatch` and runs their prefill as one engine
 * step (which also samples their first token), then one step for the running ones. With a drafter,
 * every step carries each request's proposed trie, verified in the same forward pass; plain decoding
 * is the same step with empty tries. A request ends at its first EOS or stop id (kept in its tokens)
 * or at `maxTokens`; every accepted request resolves with a result or rejects with an error, never neither.
 */
import { type DraftRequest, type Drafter, promptKey } from "../drafters/drafter";
import type { Engine, SeqResult, SeqStep } from "../engine/engine";
import { EMPTY_TRIE, type Trie, trieDepths } from "../engine/trie";
import { endsSample } from "../engine/walk";
import type { SamplingParams } from "../sampling/sampler";
import { validateParams } from "../sampling/sampler";
import { shapeOf } from "../scheduler/cost-model";

export interface RolloutRequest {
  promptIds: number[];
  params: SamplingParams;
  seed: number;
  maxTokens: number;
  /** Groups requests for history drafting; defaults to a hash of the prompt tokens. */
  historyKey?: string;
  /** Token ids that end the sample like an EOS (emitted, finish reason "stop"). */
  stopIds?: readonly number[];
}

export type FinishReason = "stop" | "length" | "abort";

export interface RolloutResult {
  tokenIds: number[];
  logprobs: number[];
  finishReason: FinishReason;
  seed: number;
  engineSteps: number;
  acceptedDraftTokens: number;
  /** Draft tokens verified for the sample (every proposed trie node, accepted or not). */
  draftTokens: number;
  /** The weight version the sample ran on (pause and bump keep it one version per sample). */
  weightVersion: number;
}

/**
 * What a caller hears about one request, synchronously from the core's loop, so that a server can
 * coalesce everything one engine step produced into one message per client.
 */
export interface RequestEvents {
  /** Tokens just verified (streaming). */
  tokens?(tokens: readonly number[], logprobs: readonly number[]): void;
  finish(result: RolloutResult): void;
  fail(error: Error): void;
}

export interface SpecConfig {
  drafter: Drafter;
  /** Deepest draft per step (the verifier may emit draftLen + 1 tokens). */
  draftLen: number;
  /** Most draft nodes per request per step (default draftLen). */
  maxNodes?: number;
}

export interface DrafterStats {
  /** Sequence-steps that carried a non-empty draft. */
  verifySeqSteps: number;
  proposedTokens: number;
  acceptedTokens: number;
  /** Proposals rejected (the drafter threw, or the trie was malformed, over budget or out of vocabulary). */
  errors: number;
  lastError?: string;
  /** The drafter's own figures (`Drafter.metrics`), filled in where stats are reported. */
  metrics?: Record<string, number>;
}

export interface CoreStats {
  engineSteps: number;
  /** Sum over engine steps of the sequences in the step. */
  seqSteps: number;
  generatedTokens: number;
  peakBatch: number;
  drafter?: DrafterStats;
}

interface Active {
  id: number;
  req: RolloutRequest;
  draft: DraftRequest;
  out: number[];
  logprobs: number[];
  steps: number;
  accepted: number;
  drafted: number;
  done: boolean;
  /** Set while the request is in an engine step: an abort or failure then waits for the step. */
  inStep: boolean;
  /** Taken from the queue into the engine (its end releases engine state, not a queue slot). */
  admitted: boolean;
  pendingEnd?: { reason: "abort" } | { error: Error };
  events: RequestEvents;
}

export class RequestError extends Error {}

/** Asked for in a state that does not allow it (e.g. a memory release while requests run). */
export class StateError extends Error {}

let nextCoreId = 0;

export class RolloutCore {
  readonly stats: CoreStats = { engineSteps: 0, seqSteps: 0, generatedTokens: 0, peakBatch: 0 };
  private queue: Active[] = [];
  private running: Active[] = [];
  private readonly byId = new Map<number, Active>();
  private nextId: number;
  private looping = false;
  private paused = false;
  private kickScheduled = false;
  private idleWaiters: (() => void)[] = [];
  /** Stamped on every result; changed only while paused and idle (see `setWeightVersion`). */
  private weightVersion = 0;
  /** Whether the engine's KV memory is released (see `releaseMemory`). */
  private memory: "held" | "released" = "held";
  /** Releases and restores, in the order asked for. */
  private memoryChain: Promise<unknown> = Promise.resolve();
  onTokens?: (count: number) => void;
  /** After each engine step's results are handed out (a server flushes its outputs here). */
  onStep?: () => void;
  /** After each engine step that ran, with the number of sequences in it (metrics). */
  onEngineStep?: (sequences: number) => void;

  constructor(
    private readonly engine: Engine,
    private readonly maxBatch: number,
    private readonly spec?: SpecConfig,
  ) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`max batch must be an integer >= 1, got ${maxBatch}`);
    if (spec && (!Number.isInteger(spec.draftLen) || spec.draftLen < 1)) throw new RangeError(`draft length must be an integer >= 1, got ${spec.draftLen}`);
    if (spec) this.stats.drafter = { verifySeqSteps: 0, proposedTokens: 0, acceptedTokens: 0, errors: 0 };
    // ids stay unique across cores that share a drafter (epochs)
    this.nextId = (nextCoreId++ % 1024) * 2 ** 40;
  }

  /** Throws a RequestError naming what is wrong with `req`. */
  check(req: RolloutRequest): void {
    const { vocabSize, maxContext } = this.engine.info;
    validateParams(req.params);
    if (!Array.isArray(req.promptIds) || req.promptIds.length === 0) throw new RequestError("prompt is empty");
    for (const t of req.promptIds) {
      if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
        throw new RequestError(`prompt token id ${t} is outside the vocabulary [0, ${vocabSize})`);
      }
    }
    if (req.stopIds !== undefined) {
      if (!Array.isArray(req.stopIds)) throw new RequestError("stop ids must be a list of token ids");
      for (const t of req.stopIds) {
        if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw new RequestError(`stop token id ${t} is outside the vocabulary [0, ${vocabSize})`);
      }
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) {
      throw new RequestError(`max tokens must be an integer >= 1, got ${req.maxTokens}`);
    }
    if (req.promptIds.length + req.maxTokens > maxContext) {
      throw new RequestError(
        `prompt of ${req.promptIds.length} tokens plus ${req.maxTokens} max tokens exceeds the model context of ${maxContext}`,
      );
    }
  }

  submit(req: RolloutRequest): Promise<RolloutResult> {
    return new Promise((resolve, reject) => {
      this.start(req, { finish: resolve, fail: reject });
    });
  }

  /** Queues a checked request and returns its id; `events` hears its tokens and its one ending. */
  start(req: RolloutRequest, events: RequestEvents): number {
    this.check(req);
    const id = this.nextId++;
    const out: number[] = [];
    const draft: DraftRequest = {
      id,
      historyKey: req.historyKey ?? promptKey(req.promptIds),
      promptIds: req.promptIds,
      output: out,
      params: req.params,
      seed: req.seed,
      maxTokens: req.maxTokens,
      maxDepth: 0,
      maxNodes: 0,
    };
    const a: Active = { id, req, draft, out, logprobs: [], steps: 0, accepted: 0, drafted: 0, done: false, inStep: false, admitted: false, events };
    this.queue.push(a);
    this.byId.set(id, a);
    this.kick();
    return id;
  }

  /**
   * Ends a request with finish reason "abort" and the tokens it has so far; false if it is not
   * known (finished, failed or never started). A request inside an engine step ends right after it.
   */
  abort(id: number): boolean {
    const a = this.byId.get(id);
    if (!a || a.done) return false;
    this.end(a, { reason: "abort" });
    return true;
  }

  /** Fails every request (queued and running) with `error`, e.g. on shutdown. */
  failAll(error: Error): void {
    for (const a of [...this.byId.values()]) this.end(a, { error });
  }

  /**
   * Stops admitting queued requests to the engine and resolves once nothing runs: after the running
   * requests finish (`drain`) or after they end with "abort". Queued and new requests wait for
   * `resume`.
   */
  pause(mode: "drain" | "abort" = "drain"): Promise<void> {
    this.paused = true;
    if (mode === "abort") for (const a of [...this.running]) this.end(a, { reason: "abort" });
    return this.whenIdle();
  }

  resume(): void {
    this.paused = false;
    this.kick();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get version(): number {
    return this.weightVersion;
  }

  /** Only between `pause` and `resume`, with nothing running: no sample spans two versions. */
  setWeightVersion(v: number): void {
    if (!this.paused || this.running.length > 0 || this.looping) throw new Error("the weight version changes only while paused and idle");
    this.weightVersion = v;
  }

  get memoryState(): "held" | "released" {
    return this.memory;
  }

  /**
   * Frees the engine's KV cache memory; only while paused and idle, like a weight change. Resolves
   * to the bytes the engine still holds. Requests keep queueing while paused; the first engine step
   * after a resume restores the memory itself if `restoreMemory` was not called, so a request that
   * arrives while the memory is released waits for the restore, never fails for it.
   */
  releaseMemory(): Promise<number> {
    if (!this.paused || this.running.length > 0 || this.looping) return Promise.reject(new StateError("memory is released only while paused and idle (wait for the paused reply)"));
    this.memory = "released";
    return this.memoryOp(() => this.engine.releaseMemory());
  }

  /** Re-allocates the engine's KV cache memory; resolves to the bytes it holds. */
  restoreMemory(): Promise<number> {
    this.memory = "held";
    return this.memoryOp(() => this.engine.restoreMemory());
  }

  private memoryOp(op: () => Promise<number>): Promise<number> {
    const run = this.memoryChain.then(op);
    this.memoryChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Releases the engine state of every sequence no running request holds (there should be none: a
   * request's end releases its sequence; this is a defensive reset) and returns how many there were.
   */
  clearKv(): number {
    const held = new Set(this.running.filter((a) => !a.done).map((a) => a.id));
    let released = 0;
    for (const id of this.engine.sequences()) {
      if (held.has(id)) continue;
      this.engine.release(id);
      released++;
    }
    return released;
  }

  get counts(): { queued: number; running: number } {
    return { queued: this.queue.length, running: this.running.length };
  }

  /** Resolves when no engine step runs and no request is running. */
  whenIdle(): Promise<void> {
    if (!this.looping && this.running.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Starts the loop on the next turn of the event loop, so requests submitted together batch together. */
  private kick(): void {
    if (this.kickScheduled || this.looping || this.paused || this.queue.length === 0) return;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      if (!this.looping && !this.paused && this.queue.length > 0) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while ((this.queue.length > 0 && !this.paused) || this.running.length > 0) {
        const admitted = this.paused ? [] : this.queue.splice(0, this.maxBatch - this.running.length);
        for (const a of admitted) a.admitted = true;
        this.running.push(...admitted);
        if (admitted.length > 0) await this.runStep(admitted, (a) => a.req.promptIds);
        const prefilled = new Set(admitted);
        const decoding = this.running.filter((a) => !a.done && !prefilled.has(a));
        if (decoding.length > 0) await this.runStep(decoding, (a) => [a.out[a.out.length - 1]]);
        this.running = this.running.filter((a) => !a.done);
      }
    } finally {
      this.looping = false;
      const waiters = this.idleWaiters.splice(0);
      for (const w of waiters) w();
      this.kick(); // a resume that raced the loop's exit
    }
  }

  /** The drafter's tries for `group` (empty where it has none, fails, or breaks the rules). */
  private async drafts(group: Active[]): Promise<Trie[]> {
    const tries: Trie[] = group.map(() => EMPTY_TRIE);
    const spec = this.spec;
    if (!spec) return tries;
    const asking: number[] = [];
    group.forEach((a, i) => {
      a.draft.maxDepth = Math.min(spec.draftLen, a.req.maxTokens - a.out.length - 1);
      a.draft.maxNodes = spec.maxNodes ?? spec.draftLen;
      if (a.draft.maxDepth > 0) asking.push(i);
    });
    if (asking.length === 0) return tries;
    let proposed: Trie[];
    try {
      proposed = await spec.drafter.propose(asking.map((i) => group[i].draft));
      if (!Array.isArray(proposed) || proposed.length !== asking.length) {
        throw new Error(`returned ${Array.isArray(proposed) ? proposed.length : typeof proposed} proposals for ${asking.length} requests`);
      }
    } catch (e) {
      this.draftError(`${spec.drafter.name} drafter failed: ${e instanceof Error ? e.message : String(e)}`, asking.length);
      return tries;
    }
    asking.forEach((i, k) => {
      const problem = this.checkTrie(proposed[k], group[i].draft);
      if (problem) this.draftError(`${spec.drafter.name} drafter: ${problem}`, 1);
      else tries[i] = proposed[k];
    });
    return tries;
  }

  private checkTrie(trie: Trie, d: DraftRequest): string | undefined {
    if (!trie || !Array.isArray(trie.tokens) || !Array.isArray(trie.parents)) return "proposal is not a trie";
    let depths: number[];
    try {
      depths = trieDepths(trie);
    } catch (e) {
      return (e as Error).message;
    }
    if (trie.tokens.length > d.maxNodes) return `${trie.tokens.length} nodes exceed the budget of ${d.maxNodes}`;
    if (depths.some((x) => x > d.maxDepth)) return `depth ${Math.max(...depths)} exceeds the budget of ${d.maxDepth}`;
    const V = this.engine.info.vocabSize;
    const bad = trie.tokens.find((t) => !Number.isInteger(t) || t < 0 || t >= V);
    if (bad !== undefined) return `token id ${bad} is outside the vocabulary [0, ${V})`;
    return undefined;
  }

  private draftError(message: string, count: number): void {
    this.stats.drafter!.errors += count;
    this.stats.drafter!.lastError = message;
  }

  /** The drafter's own figures now (asked when stats are reported, not on every step). */
  drafterMetrics(): Record<string, number> | undefined {
    return this.spec?.drafter.metrics?.();
  }

  private async runStep(group: Active[], append: (a: Active) => number[]): Promise<void> {
    for (const a of group) a.inStep = true; // from drafting on: the drafter and engine see the request
    const tries = await this.drafts(group);
    const steps: SeqStep[] = group.map((a, i) => ({
      seqId: a.id,
      append: append(a),
      trie: tries[i],
      params: a.req.params,
      seed: a.req.seed,
      maxEmit: a.req.maxTokens - a.out.length,
      stopIds: a.req.stopIds,
    }));
    let results: SeqResult[];
    try {
      // a release still in progress finishes first; a failed restore fails the step's requests
      await this.memoryChain;
      if (this.memory === "released") await this.restoreMemory();
      results = await this.stepEngine(steps);
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      for (const a of group) a.inStep = false;
      for (const a of group) this.end(a, a.pendingEnd ?? { error });
      return;
    }
    for (const a of group) a.inStep = false;
    this.stats.engineSteps++;
    this.stats.seqSteps += group.length;
    this.stats.peakBatch = Math.max(this.stats.peakBatch, group.length);
    this.onEngineStep?.(group.length);
    let emitted = 0;
    results.forEach((r, i) => {
      const a = group[i];
      if (a.done) return;
      a.steps++;
      a.out.push(...r.tokens);
      a.logprobs.push(...r.logprobs);
      a.accepted += r.accepted;
      a.drafted += tries[i].tokens.length;
      emitted += r.tokens.length;
      const ds = this.stats.drafter;
      if (ds && tries[i].tokens.length > 0) {
        ds.verifySeqSteps++;
        ds.proposedTokens += tries[i].tokens.length;
        ds.acceptedTokens += r.accepted;
      }
      this.spec?.drafter.observe?.(a.id, r.tokens, r.accepted);
      const last = a.out[a.out.length - 1];
      if (endsSample(last, this.engine.info.eosIds, a.req.stopIds)) this.end(a, { reason: "stop" });
      else if (a.out.length >= a.req.maxTokens) this.end(a, { reason: "length" });
      else if (a.pendingEnd) this.end(a, a.pendingEnd);
      else a.events.tokens?.(r.tokens, r.logprobs);
    });
    this.stats.generatedTokens += emitted;
    this.onTokens?.(emitted);
    this.onStep?.();
  }

  /**
   * One engine step for `steps`, or two where the drafter asks to split it (the requests with a draft,
   * then the others: a padded step's rows for the few then cost the many nothing); each timed for a
   * drafter that learns costs. Results come back in the order of `steps`.
   */
  private async stepEngine(steps: SeqStep[]): Promise<SeqResult[]> {
    const drafter = this.spec?.drafter;
    const hasDraft = (s: SeqStep) => (s.trie?.tokens.length ?? 0) > 0;
    let groups = [steps];
    if (drafter?.splitStep?.()) {
      const drafted = steps.filter(hasDraft);
      if (drafted.length > 0 && drafted.length < steps.length) groups = [drafted, steps.filter((s) => !hasDraft(s))];
    }
    const bySeq = new Map<number, SeqResult>();
    for (const group of groups) {
      const shape = drafter?.stepTimed ? shapeOf(group, (id) => this.engine.cachedLength(id)) : undefined;
      const t0 = performance.now();
      const results = await this.engine.step(group);
      if (shape) drafter!.stepTimed!({ shape, ms: performance.now() - t0, prefill: group.some((s) => s.append.length > 1) });
      if (groups.length === 1) return results;
      for (const r of results) bySeq.set(r.seqId, r);
    }
    return steps.map((s) => bySeq.get(s.seqId)!);
  }

  /**
   * Ends a request once: releases its engine state and tells its caller. Inside an engine step the
   * ending waits for the step (the engine still holds the sequence), so a caller never hears twice.
   */
  private end(a: Active, how: { reason: FinishReason } | { error: Error }): void {
    if (a.done) return;
    if (a.inStep) {
      a.pendingEnd ??= "error" in how ? how : { reason: "abort" };
      return;
    }
    a.done = true;
    this.byId.delete(a.id);
    if (a.admitted) this.engine.release(a.id);
    else this.queue.splice(this.queue.indexOf(a), 1);
    this.spec?.drafter.finish?.(a.draft, a.out);
    if ("error" in how) {
      a.events.fail(how.error);
      return;
    }
    a.events.finish({
      tokenIds: a.out,
      logprobs: a.logprobs,
      finishReason: how.reason,
      seed: a.req.seed,
      engineSteps: a.steps,
      acceptedDraftTokens: a.accepted,
      draftTokens: a.drafted,
      weightVersion: this.weightVersion,
    });
  }
}
