/**
 * The decoupled model drafter. The drafter runs ahead on an engine of its own (its own thread or
 * cores, or drafter workers on other devices) while the verifier runs: a pump steps it whenever a
 * request is short of drafts, guessing the verifier's next sample and drafting on past it, and
 * `propose` hands the verifier whatever lies past the verified sequence, never waiting. A drafted
 * token then costs the verifier only its verify row, so c = 0 in the stop rule of model.ts. What the
 * verifier rejects is rolled back at the pump's next step. The two overlap only where both engines
 * step off the main thread (`ThreadedEngine`, workers); otherwise the pump runs between verifier
 * steps, and the output is the same. Measured on this repository's 2-core machine, splitting the
 * cores (one each) costs each engine its second thread, and it only ties the coupled drafter (README).
 */
import type { Engine, SeqStep } from "../engine/engine";
import { chain, type DraftRequest, type Drafter } from "./drafter";
import type { Trie } from "../engine/trie";
import type { AcceptanceTable } from "./acceptance-table";
import { ModelDrafterBase, ema, onBranch, type ModelDrafterOptions } from "./model";

/** A request's drafter sequence: `known` is what the drafter has seen or drafted. */
interface Track {
  request: DraftRequest;
  known: number[];
  /** The drafter's probability of each token of `known` it drafted (NaN for tokens it was fed). */
  confs: number[];
  /** The request ended: the pump releases its engine sequence between two steps. */
  released: boolean;
}

export class DecoupledModelDrafter extends ModelDrafterBase implements Drafter {
  readonly name = "model";
  /** The requests the pump drafts for, its running loop, and a failure to report. */
  private readonly tracks = new Map<number, Track>();
  private pumping?: Promise<void>;
  private pumpRunning = false;
  private pumpFailure?: Error;
  private closing = false;
  constructor(engine: Engine, opts: Partial<ModelDrafterOptions> = {}, table?: AcceptanceTable) {
    super(engine, opts, table);
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    this.proposeBegins();
    try {
      return this.takeAhead(requests);
    } finally {
      this.proposeEnds();
    }
  }

  /**
   * Each request's chain is what the pump drafted past the verified sequence, if the verifier stayed
   * on the drafted branch, cut where a token's reach falls below its verify row's worth (the stop
   * rule with c = 0: the drafter's time is not the verifier's).
   *
   * The verifier never waits for the pump. Its own sample past the chain is a token the drafter need
   * not draft: the pump feeds it together with the token before in one step (a step costs about the
   * same for one token or two), so the two together emit more than the drafter alone could draft.
   * Waiting for a step about to end, when the wait is shorter than the token's expected share of a
   * verify step, measured slower (55.5 against 57.7 tok/s, 8 samples at batch 1).
   */
  private takeAhead(requests: DraftRequest[]): Trie[] {
    const failure = this.pumpFailure;
    this.pumpFailure = undefined;
    if (failure) throw failure;
    const tries = requests.map((r) => {
      const t = this.tracks.get(r.id);
      if (t) t.request = r;
      else this.tracks.set(r.id, { request: r, known: [], confs: [], released: false });
      const c = this.readyChain(r, this.tracks.get(r.id)!);
      if (c.tokens.length > 0) this.proposed.set(r.id, c.confs);
      return { ...chain(c.tokens), scores: c.scores };
    });
    this.kickPump();
    return tries;
  }

  /** Request r's chain from what the pump has drafted, with the drafter's confidences and each token's reach. */
  private readyChain(r: DraftRequest, t: Track): { tokens: number[]; confs: number[]; scores: number[] } {
    const v = this.opts.costAware ? this.rowPrice([r]) : 0;
    const typical = this.typical;
    const base = r.promptIds.length + r.output.length;
    const out = { tokens: [] as number[], confs: [] as number[], scores: [] as number[] };
    if (!onBranch(t.known, r)) return out;
    let reach = 1;
    let expected = 1;
    for (let i = base; i < t.known.length && out.tokens.length < Math.min(r.maxDepth, r.maxNodes); i++) {
      const chance = reach * this.acceptance(t.confs[i], typical);
      if (chance < this.bar(expected, out.tokens.length, v)) break;
      out.tokens.push(t.known[i]);
      out.confs.push(t.confs[i]);
      out.scores.push(chance);
      reach = chance;
      expected += chance;
    }
    return out;
  }

  private kickPump(): void {
    if (this.pumpRunning || this.closing) return;
    this.pumpRunning = true;
    this.pumping = this.pump();
  }

  /**
   * Steps the drafter engine while any request is short of drafts, one token per request per step,
   * each request on its latest verified sequence: a request whose verifier left the drafted branch
   * is rolled back and fed what was verified. It runs ahead of the verifier by up to 2 maxDepth + 1
   * tokens (the chain being verified, the verifier's next sample, the next chain). This is the only
   * place that steps, truncates or releases the drafter engine while a pump may run.
   */
  private async pump(): Promise<void> {
    try {
      while (!this.closing) {
        const steps: SeqStep[] = [];
        const stepped: Track[] = [];
        for (const [id, t] of this.tracks) {
          if (t.released) {
            this.engine.release(id);
            this.tracks.delete(id);
            continue;
          }
          const append = this.nextFeed(t);
          if (!append) continue;
          steps.push({ seqId: id, append, params: t.request.params, seed: t.request.seed, maxEmit: 1 });
          stepped.push(t);
        }
        if (steps.length === 0) break;
        const t0 = performance.now();
        const results = await this.engine.step(steps);
        this.draftStepMs = ema(this.draftStepMs, performance.now() - t0);
        results.forEach((res, k) => {
          stepped[k].known.push(res.tokens[0]);
          stepped[k].confs.push(Math.exp(res.logprobs[0]));
        });
      }
    } catch (e) {
      this.pumpFailure = e instanceof Error ? e : new Error(String(e));
      // a failed step leaves the engine's sequences unknown: start every request afresh
      for (const [id, t] of this.tracks) {
        if (this.engine.cachedLength(id) > 0) this.engine.release(id);
        t.known = [];
        t.confs = [];
      }
    } finally {
      // cleared in the same turn as the loop's last check, so `finish` never marks a track no pump will see
      this.pumpRunning = false;
    }
  }

  /** The tokens to feed track t next, or undefined when it is far enough ahead (or ended in EOS). */
  private nextFeed(t: Track): number[] | undefined {
    const r = t.request;
    const id = r.id;
    if (!onBranch(t.known, r)) {
      const truth = [...r.promptIds, ...r.output];
      const feed = this.rollBack(id, t.known, truth);
      t.known = truth;
      t.confs = truth.map(() => NaN);
      return feed;
    }
    const ahead = t.known.length - r.promptIds.length - r.output.length;
    if (r.maxDepth <= 0 || ahead >= 2 * r.maxDepth + 1) return undefined;
    if (ahead > 0 && this.engine.info.eosIds.includes(t.known[t.known.length - 1])) return undefined;
    return t.known.slice(this.engine.cachedLength(id));
  }

  /** The verifier walked `accepted` of the last proposal: tokens 1..accepted+1 were tried (of the `verified` sent). */
  observe(id: number, _emitted: readonly number[], accepted: number, verified?: number): void {
    this.recordOutcome(id, accepted, verified);
  }

  finish(r: DraftRequest): void {
    this.proposed.delete(r.id);
    const t = this.tracks.get(r.id);
    if (t && this.pumpRunning) {
      t.released = true; // the pump may be stepping it
      return;
    }
    this.tracks.delete(r.id);
    this.engine.release(r.id);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.pumping;
    await this.engine.close();
  }
}
