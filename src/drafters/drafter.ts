/**
 * Drafters propose token tries for the verifier to check in one pass. A proposal only decides how
 * many tokens a step may emit, never which (docs/SAMPLING.md): any trie is safe, a good one is fast.
 *
 * The rollout core calls `propose` once per verify step with every running request that has budget
 * left, then `observe` with what was emitted, and `finish` when a request ends. Proposals must stay
 * within `maxDepth` and `maxNodes` and use vocabulary ids; the core rejects any that does not (and a
 * drafter that throws), counts the error, and verifies that request without a draft.
 */
import type { SamplingParams } from "../sampling/sampler";
import type { Trie } from "../engine/trie";
import type { StepShape } from "../scheduler/cost-model";

export interface DraftRequest {
  /** The core's id of the request (stable for its lifetime). */
  id: number;
  /** Groups requests by prompt: a hash of the prompt tokens unless the caller gives one. */
  historyKey: string;
  promptIds: readonly number[];
  /** Tokens emitted so far (all verified). */
  output: readonly number[];
  params: SamplingParams;
  seed: number;
  /** The request's token budget (output included). */
  maxTokens: number;
  /** Depth limit of the proposal (the remaining budget minus the bonus token, capped by the draft length). */
  maxDepth: number;
  maxNodes: number;
  /**
   * One more verify row's cost in units of a sequence's share of a plain step, as the scheduling
   * policy's cost model quotes it for this step (about 0.05 at batch 1 on a CPU, 0.4 at batch 64; near
   * 0 on a GPU). A drafter that pays for its own steps (the model drafter) weighs its tokens with it.
   * Unset outside the policy: such a drafter then uses its own default.
   */
  rowPrice?: number;
}

/** One engine step's shape and measured time, for drafters that learn costs (the policy's cost model). */
export interface StepTiming {
  shape: StepShape;
  ms: number;
  /** The step appended more than one token to some sequence (a prefill: another cost regime than a verify step). */
  prefill: boolean;
}

export interface Drafter {
  readonly name: string;
  propose(requests: DraftRequest[]): Promise<Trie[]>;
  /**
   * `emitted` tokens were appended to the request (accepted draft tokens, then the sample); `accepted`
   * of them were this drafter's nodes. `verified`: how many of its proposed nodes the step verified,
   * where a policy verified only part of the proposal (unset: all of it).
   */
  observe?(id: number, emitted: readonly number[], accepted: number, verified?: number): void;
  /** The request ended; `output` is its whole response (a history drafter learns from it). */
  finish?(request: DraftRequest, output: readonly number[]): void;
  /**
   * After `propose`: whether the step should run the requests with a draft and those without as two
   * engine steps (the engines pad a step to its longest sequence; a policy that drafts for a few
   * requests of a large batch saves the others' padding rows).
   */
  splitStep?(): boolean;
  /** Every engine step this drafter's proposals went into, timed. */
  stepTimed?(timing: StepTiming): void;
  /** The drafter's own figures for summaries and stats (the model drafter's acceptance and cost). */
  metrics?(): Record<string, number>;
  close?(): Promise<void>;
}

/** FNV-1a over the prompt token ids: the default history key. */
export function promptKey(ids: readonly number[]): string {
  let h = 0x811c9dc5;
  for (const t of ids) {
    for (let s = 0; s < 32; s += 8) {
      h ^= (t >>> s) & 0xff;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  }
  return `${ids.length}:${h.toString(16)}`;
}

/** A chain trie of `tokens`. */
export function chain(tokens: readonly number[]): Trie {
  return { tokens: [...tokens], parents: tokens.map((_, i) => i - 1) };
}
