/**
 * A model drafter: a smaller engine (the layer-truncated policy) decodes `maxDepth` tokens per
 * request, sampling with the request's own seeded noise and parameters: Gumbel coupling, so where the
 * drafter's distribution is close to the verifier's, its sample is the verifier's sample
 * (acceptance >= (1 - TV) / (1 + TV) per token; Daliri et al. 2024).
 *
 * The drafter engine keeps its own KV per request. Before drafting it is rolled back to the longest
 * prefix it shares with the verified sequence (its rejected drafts are dropped) and fed the rest.
 *
 * The chain stops where the verifier is unlikely to walk. The drafter's probability p_i of the token
 * it drew (under the request's temperature and top-k/top-p) estimates the chance that the verifier
 * draws it too (a draft model's confidence tracks its acceptance rate; EAGLE-2, Li et al. 2024), so
 * the product p_1 ... p_d estimates the chance that the verifier reaches depth d. A token below
 * `minReach` is not proposed and ends the chain: each drafted token costs a drafter step and a
 * verify row, and an unsure drafter should not fill the draft length.
 */
import type { Engine, SeqStep } from "../engine/engine";
import { chain, type DraftRequest, type Drafter } from "./drafter";
import type { Trie } from "../engine/trie";

export interface ModelDrafterOptions {
  /** Least estimated chance that the verifier reaches a drafted token. */
  minReach: number;
}

export class ModelDrafter implements Drafter {
  readonly name = "model";
  /** Tokens the drafter engine has seen per request (its KV holds all but possibly the last). */
  private readonly known = new Map<number, number[]>();
  private readonly opts: ModelDrafterOptions;

  constructor(
    private readonly engine: Engine,
    opts: Partial<ModelDrafterOptions> = {},
  ) {
    this.opts = { minReach: 0.05, ...opts };
  }

  async propose(requests: DraftRequest[]): Promise<Trie[]> {
    const drafts: number[][] = requests.map(() => []);
    let live = requests.map((_, i) => i).filter((i) => requests[i].maxDepth > 0);
    let appends = new Map<number, number[]>();
    for (const i of live) {
      const r = requests[i];
      const truth = [...r.promptIds, ...r.output];
      const known = this.known.get(r.id) ?? [];
      const cached = this.engine.cachedLength(r.id);
      let common = 0;
      while (common < cached && common < truth.length && known[common] === truth[common]) common++;
      common = Math.min(common, truth.length - 1); // the step must append at least one token
      if (cached > common) this.engine.truncate(r.id, common);
      appends.set(i, truth.slice(common));
      this.known.set(r.id, truth);
    }
    const reach = requests.map(() => 1);
    for (let depth = 0; live.length > 0; depth++) {
      const steps: SeqStep[] = live.map((i) => ({
        seqId: requests[i].id,
        append: appends.get(i)!,
        params: requests[i].params,
        seed: requests[i].seed,
        maxEmit: 1,
      }));
      const results = await this.engine.step(steps);
      const next = new Map<number, number[]>();
      live = live.filter((i, k) => {
        const r = requests[i];
        const t = results[k].tokens[0];
        reach[i] *= Math.exp(results[k].logprobs[0]);
        if (reach[i] < this.opts.minReach) return false;
        drafts[i].push(t);
        this.known.get(r.id)!.push(t);
        next.set(i, [t]);
        return drafts[i].length < r.maxDepth && !this.engine.info.eosIds.includes(t);
      });
      appends = next;
    }
    return drafts.map((d, i) => chain(d.slice(0, requests[i].maxNodes)));
  }

  finish(r: DraftRequest): void {
    this.known.delete(r.id);
    this.engine.release(r.id);
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
