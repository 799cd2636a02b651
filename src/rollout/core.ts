/**
 * The rollout core: continuous batching over one engine, plain or speculative. The CLI drives it
 * today and the server will drive the same object, so there is one path from request to tokens.
 *
 * Each loop iteration admits queued requests up to `maxBatch` and runs their prefill as one engine
 * step (which also samples their first token), then one step for the running ones. With a drafter,
 * every step carries each request's proposed trie, verified in the same forward pass; plain decoding
 * is the same step with empty tries. A request ends at its first EOS (kept in its tokens) or at
 * `maxTokens`; every accepted request resolves with a result or rejects with an error, never neither.
 */
import { type DraftRequest, type Drafter, promptKey } from "../drafters/drafter";
import type { Engine, SeqResult, SeqStep } from "../engine/engine";
import { EMPTY_TRIE, type Trie, trieDepths } from "../engine/trie";
import type { SamplingParams } from "../sampling/sampler";
import { validateParams } from "../sampling/sampler";

export interface RolloutRequest {
  promptIds: number[];
  params: SamplingParams;
  seed: number;
  maxTokens: number;
  /** Groups requests for history drafting; defaults to a hash of the prompt tokens. */
  historyKey?: string;
}

export type FinishReason = "stop" | "length";

export interface RolloutResult {
  tokenIds: number[];
  logprobs: number[];
  finishReason: FinishReason;
  seed: number;
  engineSteps: number;
  acceptedDraftTokens: number;
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
  done: boolean;
  resolve: (r: RolloutResult) => void;
  reject: (e: Error) => void;
}

export class RequestError extends Error {}

let nextCoreId = 0;

export class RolloutCore {
  readonly stats: CoreStats = { engineSteps: 0, seqSteps: 0, generatedTokens: 0, peakBatch: 0 };
  private queue: Active[] = [];
  private running: Active[] = [];
  private nextId: number;
  private looping = false;
  onTokens?: (count: number) => void;

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
      const id = this.nextId++;
      const out: number[] = [];
      const draft: DraftRequest = {
        id,
        historyKey: req.historyKey ?? promptKey(req.promptIds),
        promptIds: req.promptIds,
        output: out,
        params: req.params,
        seed: req.seed,
        maxDepth: 0,
        maxNodes: 0,
      };
      this.queue.push({ id, req, draft, out, logprobs: [], steps: 0, accepted: 0, done: false, resolve, reject });
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

  private async runStep(group: Active[], append: (a: Active) => number[]): Promise<void> {
    const tries = await this.drafts(group);
    const steps: SeqStep[] = group.map((a, i) => ({
      seqId: a.id,
      append: append(a),
      trie: tries[i],
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
      a.accepted += r.accepted;
      emitted += r.tokens.length;
      const ds = this.stats.drafter;
      if (ds && tries[i].tokens.length > 0) {
        ds.verifySeqSteps++;
        ds.proposedTokens += tries[i].tokens.length;
        ds.acceptedTokens += r.accepted;
      }
      this.spec?.drafter.observe?.(a.id, r.tokens, r.accepted);
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
    this.spec?.drafter.finish?.(a.draft, a.out);
    a.resolve({
      tokenIds: a.out,
      logprobs: a.logprobs,
      finishReason: reason,
      seed: a.req.seed,
      engineSteps: a.steps,
      acceptedDraftTokens: a.accepted,
    });
  }

  private fail(a: Active, e: Error): void {
    a.done = true;
    this.engine.release(a.id);
    this.spec?.drafter.finish?.(a.draft, a.out);
    a.reject(e);
  }
}
