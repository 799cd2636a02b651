/** The deterministic stream of uniforms in [0, 1) the built-in prompt sets draw item `index` from. */
import { deriveSeed } from "../sampling/seeds";

export function uniforms(seed: number, domain: number, index: number): () => number {
  let state = deriveSeed(seed, domain, index);
  let j = 0;
  return () => (state = deriveSeed(state, 0, j++)) / 2 ** 53;
}
