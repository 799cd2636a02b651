/**
 * Threefry-2x32 with 20 rounds (Salmon et al., SC'11; the Random123 reference): a counter-based
 * generator built from 32-bit add, rotate and xor only, so TypeScript, numpy and torch compute the
 * same bits. Known answers from Random123 are checked in the tests; `bridge/vectors/` ties this file
 * to `python/specactor/sampling.py`.
 *
 *     key     = (seed mod 2^32, floor(seed / 2^32) | domain << 21)    seed < 2^53, domain < 2^11
 *     counter = (c0, c1)
 *     bits53  = (x0 >>> 11) * 2^32 + x1                               exact in a float64
 */

const ROTATIONS = [13, 15, 26, 6, 17, 29, 16, 24];
const PARITY = 0x1bd11bda;
const TWO32 = 4294967296;

export const MAX_SEED = 2 ** 53;
export const DOMAIN_SAMPLE = 0;
export const DOMAIN_DERIVE = 1;

/** The two key words of `seed` in `domain`; throws on a seed outside [0, 2^53). */
export function seedKey(seed: number, domain: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`seed must be an integer in [0, 2^53), got ${seed}`);
  }
  return [seed >>> 0, (Math.floor(seed / TWO32) | (domain << 21)) >>> 0];
}

/** Writes threefry2x32_20((c0, c1), (k0, k1)) into out[0], out[1] (as uint32 values). */
export function threefry2x32(c0: number, c1: number, k0: number, k1: number, out: Uint32Array): void {
  const k2 = (k0 ^ k1 ^ PARITY) >>> 0;
  let x0 = (c0 + k0) >>> 0;
  let x1 = (c1 + k1) >>> 0;
  // Unrolled by injection (every 4 rounds); ks[i % 3] and ks[(i + 1) % 3] + i.
  const ks0 = k0 >>> 0, ks1 = k1 >>> 0;
  for (let i = 1; i <= 5; i++) {
    const base = ((i - 1) & 1) * 4;
    for (let j = 0; j < 4; j++) {
      const r = ROTATIONS[base + j];
      x0 = (x0 + x1) >>> 0;
      x1 = (((x1 << r) | (x1 >>> (32 - r))) ^ x0) >>> 0;
    }
    const m = i % 3;
    const a = m === 0 ? ks0 : m === 1 ? ks1 : k2;
    const b = m === 0 ? ks1 : m === 1 ? k2 : ks0;
    x0 = (x0 + a) >>> 0;
    x1 = (x1 + b + i) >>> 0;
  }
  out[0] = x0;
  out[1] = x1;
}

/** The third key word of the Threefry key schedule. */
export function keyParity(k0: number, k1: number): number {
  return (k0 ^ k1 ^ PARITY) >>> 0;
}

const scratch = new Uint32Array(2);

/** 53 random bits of counter (c0, c1) under a key, as an exact integer-valued float64. */
export function bits53(c0: number, c1: number, k0: number, k1: number): number {
  threefry2x32(c0, c1, k0, k1, scratch);
  return (scratch[0] >>> 11) * TWO32 + scratch[1];
}

/** U(seed, position, token) in (0, 1): never 0 or 1. */
export function uniform(seed: number, position: number, token: number): number {
  const [k0, k1] = seedKey(seed, DOMAIN_SAMPLE);
  return (bits53(position, token, k0, k1) + 0.5) / MAX_SEED;
}
