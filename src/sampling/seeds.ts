/**
 * Seeds. A request's seed is explicit or freshly random, never a constant default: veRL sends GRPO
 * siblings as separate identical calls, and equal seeds would make every sibling identical.
 *
 *     deriveSeed(S, a, b) = bits53(threefry((a, b), key(S, DOMAIN_DERIVE)))
 *
 * The rollout CLI gives sample i of prompt j the seed deriveSeed(S, j, i); the derivation domain
 * keeps these keys apart from the sampling noise of S itself.
 */
import { randomBytes } from "node:crypto";
import { DOMAIN_DERIVE, bits53, seedKey } from "./threefry";

export function deriveSeed(seed: number, a: number, b: number): number {
  if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < 0 || a >= 2 ** 32 || b >= 2 ** 32) {
    throw new RangeError(`derivation indices must be uint32, got (${a}, ${b})`);
  }
  const [k0, k1] = seedKey(seed, DOMAIN_DERIVE);
  return bits53(a, b, k0, k1);
}

/** A fresh random seed in [0, 2^53). */
export function freshSeed(): number {
  const b = randomBytes(8);
  return (b.readUInt32LE(0) >>> 11) * 4294967296 + b.readUInt32LE(4);
}
