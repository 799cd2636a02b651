/**
 * The rollout core: continuous batching over one engine. The CLI drives it today and the server
 * will drive the same object, so there is one path from request to tokens.
 *
 * Each loop iteration admits queued requests up to `maxBatch`, runs their prefill as one engine step
 * (which also samples their first token), then one decode step for the running ones. A request ends
 * at its first EOS (kept in its tokens) or at `maxTokens`; every accepted request resolves with a
 * result or rejects with an error, never neither.
 */
import type { Engine, SeqResult, SeqStep } from "../engine/engine";
import type { SamplingParams } from "../sampling/sampler";
import { validateParams } from "../sampling/sampler";

export interface RolloutRequest {
  promptIds: number[];
  params: SamplingParams;
  seed: number;
  maxTokens: number;
}

export type FinishReason = "stop" | "length";

export interface RolloutResult {
  tokenIds: number[];
  logprobs: number[];
  finishReason: FinishReason;
  seed: number;
  engineSteps: number;
}

export interface CoreStats {
  engineSteps: number;
  /** Sum over engine steps of the sequences in the step. */
  seqSteps: number;
  generatedTokens: number;
  peakBatch: number;
}

interface Active {
  id: number;
  req: RolloutRequest;
  out: number[];
  logprobs: number[];
  steps: number;
  done: boolean;
  resolve: (r: RolloutResult) => void;
  reject: (e: Error) => void;
}

export class RequestError extends Error {}

export class RolloutCore {
  readonly stats: CoreStats = { engineSteps: 0, seqSteps: 0, generatedTokens: 0, peakBatch: 0 };
  private queue: Active[] = [];
  private running: Active[] = [];
  private nextId = 0;
  private looping = false;
  onTokens?: (count: number) => void;

  constructor(private readonly engine: Engine, private readonly maxBatch: number) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`max batch must be an integer >= 1, got ${maxBatch}`);
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
    this.check(req);
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, req, out: [], logprobs: [], steps: 0, done: false, resolve, reject });
      if (!this.looping) void this.loop();
    });
  }

  get pending(): number {
    return this.queue.length + this.running.length;
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.queue.length > 0 || this.running.length > 0) {
        const admitted = this.queue.splice(0, this.maxBatch - this.running.length);
        if (admitted.length > 0) await this.runStep(admitted, (a) => a.req.promptIds);
        const decoding = this.running.filter((a) => !admitted.includes(a));
        if (decoding.length > 0) await this.runStep(decoding, (a) => [a.out[a.out.length - 1]]);
        this.running = [...this.running, ...admitted].filter((a) => !a.done);
      }
    } finally {
      this.looping = false;
    }
  }

  private async runStep(group: Active[], append: (a: Active) => number[]): Promise<void> {
    const steps: SeqStep[] = group.map((a) => ({
      seqId: a.id,
      append: append(a),
      params: a.req.params,
      seed: a.req.seed,
      maxEmit: a.req.maxTokens - a.out.length,
    }));
    let results: SeqResult[];
    try {
      results = await this.engine.step(steps);
    } catch (e) {
      for (const a of group) this.fail(a, e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.stats.engineSteps++;
    this.stats.seqSteps += group.length;
    this.stats.peakBatch = Math.max(this.stats.peakBatch, group.length);
    let emitted = 0;
    results.forEach((r, i) => {
      const a = group[i];
      a.steps++;
      a.out.push(...r.tokens);
      a.logprobs.push(...r.logprobs);
      emitted += r.tokens.length;
      const last = a.out[a.out.length - 1];
      if (this.engine.info.eosIds.includes(last)) this.finish(a, "stop");
      else if (a.out.length >= a.req.maxTokens) this.finish(a, "length");
    });
    this.stats.generatedTokens += emitted;
    this.onTokens?.(emitted);
  }

  private finish(a: Active, reason: FinishReason): void {
    a.done = true;
    this.engine.release(a.id);
    a.resolve({ tokenIds: a.out, logprobs: a.logprobs, finishReason: reason, seed: a.req.seed, engineSteps: a.steps });
  }

  private fail(a: Active, e: Error): void {
    a.done = true;
    this.engine.release(a.id);
    a.reject(e);
  }
}
