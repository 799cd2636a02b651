#!/usr/bin/env node
/**
 * Source of the sampler's vocabulary kernel (WebAssembly SIMD), and its build.
 *
 *     node scripts/sampler-kernel.js          rewrites src/sampling/kernel-wasm.ts from the text below
 *     node scripts/sampler-kernel.js --check  exits 1 if the committed bytes differ from this source
 *
 * The kernel runs the three loops of `Sampler.sample` that touch every kept token (sampler.ts holds
 * the rule and the proof that pruning is exact); the few surviving tokens are scored in TypeScript:
 *
 *   scale_max(logits, z, n, T)        z_v = f64(logit_v) / T; returns max z (NaN logits ignored)
 *   exp_all(z, pv, keep, n, m)        pv_v = exp(z_v - m), keep_v = v; returns sum pv
 *   screen(keep, pv, cand, candU, n, c0, k0, k1, k2, bound)
 *                                     cand <- every i < n (ascending) with NOT (1 - U_i > bound * pv_i),
 *                                     candU <- their U_i, where U_i = (bits53(c0, keep_i) + 0.5) / 2^53
 *                                     (Threefry-2x32-20, key parity word k2 = k0 ^ k1 ^ 0x1bd11bda);
 *                                     returns their count
 *
 * exp: x = k ln2 + r with k = nearest(x log2 e) and ln2 split in two (fdlibm's ln2_hi/ln2_lo), so
 * |r| <= ln2/2; exp(r) by its Taylor series to degree 13 (truncation < 5e-18 relative); 2^k is built
 * in the exponent bits. x < -708 gives 0 (those tokens carry < 1e-307 of the mass). exp(0) = 1
 * exactly, so the most likely token keeps pv = 1. Results agree with Math.exp to a few ulp: they only
 * feed the pruning bound (which has a 1e-6 margin) and the log-normaliser (checked to 1e-12).
 *
 * Threefry runs on i32x4 lanes, two vectors (8 tokens) per iteration for instruction-level
 * parallelism; its U is bit-identical to threefry.ts's scalar uniform, so survivors are exactly the
 * tokens the scalar loop would have scored, and their U (handed back in candU) is the scalar's.
 */
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const ROTATIONS = [13, 15, 26, 6, 17, 29, 16, 24];

function threefryRounds(vecs) {
  // x0/x1 of each vector are locals $a0_<v>/$a1_<v>; keys are splatted in $ks0, $ks1, $ks2
  const out = [];
  for (let inj = 1; inj <= 5; inj++) {
    const base = ((inj - 1) & 1) * 4;
    for (let j = 0; j < 4; j++) {
      const r = ROTATIONS[base + j];
      for (const v of vecs) {
        out.push(`(local.set $a0_${v} (i32x4.add (local.get $a0_${v}) (local.get $a1_${v})))`);
        out.push(
          `(local.set $a1_${v} (v128.xor (v128.or (i32x4.shl (local.get $a1_${v}) (i32.const ${r})) ` +
            `(i32x4.shr_u (local.get $a1_${v}) (i32.const ${32 - r}))) (local.get $a0_${v})))`,
        );
      }
    }
    const x = `$ks${inj % 3}`;
    const y = `$ks${(inj + 1) % 3}`;
    for (const v of vecs) {
      out.push(`(local.set $a0_${v} (i32x4.add (local.get $a0_${v}) (local.get ${x})))`);
      out.push(`(local.set $a1_${v} (i32x4.add (local.get $a1_${v}) (i32x4.add (local.get ${y}) (v128.const i32x4 ${inj} ${inj} ${inj} ${inj}))))`);
    }
  }
  return out.join("\n      ");
}

/** Lanes 0-1 (low) or 2-3 (high) of x0 >> 11 and x1 as U in f64x2. */
function uniform(v, half) {
  const pick = (expr) =>
    half === 0 ? expr : `(i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 ${expr} ${expr})`;
  const hi = `(f64x2.convert_low_i32x4_u ${pick(`(i32x4.shr_u (local.get $a0_${v}) (i32.const 11))`)})`;
  const lo = `(f64x2.convert_low_i32x4_u ${pick(`(local.get $a1_${v})`)})`;
  return (
    `(f64x2.mul (f64x2.add (f64x2.add (f64x2.mul ${hi} (f64x2.splat (f64.const 4294967296))) ${lo}) ` +
    `(f64x2.splat (f64.const 0.5))) (f64x2.splat (f64.const 0x1p-53)))`
  );
}

/** Appends to cand (and their U to candU) the lanes of a pair (indices $i + off, $i + off + 1) that survive the screen. */
function screenPair(v, half, off) {
  return `
      (local.set $w ${uniform(v, half)})
      (local.set $mask (i64x2.bitmask (f64x2.gt
        (f64x2.sub (f64x2.splat (f64.const 1)) (local.get $w))
        (f64x2.mul (local.get $bound2) (v128.load (i32.add (local.get $pv) (i32.shl (i32.add (local.get $i) (i32.const ${off})) (i32.const 3))))))))
      (if (i32.ne (local.get $mask) (i32.const 3))
        (then
          (if (i32.and (i32.eqz (i32.and (local.get $mask) (i32.const 1))) (i32.lt_u (i32.add (local.get $i) (i32.const ${off})) (local.get $n)))
            (then
              (i32.store (i32.add (local.get $cand) (i32.shl (local.get $m) (i32.const 2))) (i32.add (local.get $i) (i32.const ${off})))
              (f64.store (i32.add (local.get $candU) (i32.shl (local.get $m) (i32.const 3))) (f64x2.extract_lane 0 (local.get $w)))
              (local.set $m (i32.add (local.get $m) (i32.const 1)))))
          (if (i32.and (i32.eqz (i32.and (local.get $mask) (i32.const 2))) (i32.lt_u (i32.add (local.get $i) (i32.const ${off + 1})) (local.get $n)))
            (then
              (i32.store (i32.add (local.get $cand) (i32.shl (local.get $m) (i32.const 2))) (i32.add (local.get $i) (i32.const ${off + 1})))
              (f64.store (i32.add (local.get $candU) (i32.shl (local.get $m) (i32.const 3))) (f64x2.extract_lane 1 (local.get $w)))
              (local.set $m (i32.add (local.get $m) (i32.const 1)))))))`;
}

// Horner coefficients of exp's Taylor series, highest degree first (1/13! ... 1/1!, 1)
const TAYLOR = [];
{
  let f = 1;
  const inv = [1];
  for (let d = 1; d <= 13; d++) {
    f *= d;
    inv.push(1 / f);
  }
  for (let d = 13; d >= 0; d--) TAYLOR.push(inv[d]);
}

function expBody() {
  // $x: f64x2 input (<= 0), leaves exp($x) in $e
  let horner = `(f64x2.splat (f64.const ${TAYLOR[0]}))`;
  for (const c of TAYLOR.slice(1)) {
    horner = `(f64x2.add (f64x2.mul ${horner} (local.get $r)) (f64x2.splat (f64.const ${c})))`;
  }
  return `
      (local.set $k (f64x2.nearest (f64x2.mul (local.get $x) (f64x2.splat (f64.const 1.4426950408889634)))))
      (local.set $r (f64x2.sub
        (f64x2.sub (local.get $x) (f64x2.mul (local.get $k) (f64x2.splat (f64.const 6.93147180369123816490e-01))))
        (f64x2.mul (local.get $k) (f64x2.splat (f64.const 1.90821492927058770002e-10)))))
      (local.set $e (f64x2.mul ${horner}
        (i64x2.shl (i64x2.add (i64x2.extend_low_i32x4_s (i32x4.trunc_sat_f64x2_s_zero (local.get $k)))
          (v128.const i64x2 1023 1023)) (i32.const 52))))
      (local.set $e (v128.andnot (local.get $e) (f64x2.lt (local.get $x) (f64x2.splat (f64.const -708)))))`;
}

function wat() {
  return `(module
  (memory (export "memory") 1)

  (func (export "scale_max") (param $logits i32) (param $z i32) (param $n i32) (param $t f64) (result f64)
    (local $i i32) (local $acc v128) (local $x v128) (local $s f64) (local $m f64)
    (local.set $acc (f64x2.splat (f64.const -inf)))
    (block $done (loop $pairs
      (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $n)))
      (local.set $x (f64x2.div
        (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $logits) (i32.shl (local.get $i) (i32.const 2)))))
        (f64x2.splat (local.get $t))))
      (v128.store (i32.add (local.get $z) (i32.shl (local.get $i) (i32.const 3))) (local.get $x))
      (local.set $acc (f64x2.pmax (local.get $acc) (local.get $x)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $pairs)))
    (local.set $m (f64.max (f64x2.extract_lane 0 (local.get $acc)) (f64x2.extract_lane 1 (local.get $acc))))
    (if (i32.lt_u (local.get $i) (local.get $n))
      (then
        (local.set $s (f64.div (f64.promote_f32 (f32.load (i32.add (local.get $logits) (i32.shl (local.get $i) (i32.const 2))))) (local.get $t)))
        (f64.store (i32.add (local.get $z) (i32.shl (local.get $i) (i32.const 3))) (local.get $s))
        (if (f64.gt (local.get $s) (local.get $m)) (then (local.set $m (local.get $s))))))
    (local.get $m))

  (func (export "exp_all") (param $z i32) (param $pv i32) (param $keep i32) (param $n i32) (param $max f64) (result f64)
    (local $i i32) (local $x v128) (local $k v128) (local $r v128) (local $e v128) (local $sum v128)
    (local $ids v128)
    (local.set $ids (v128.const i32x4 0 1 2 3))
    (block $done (loop $quads
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (v128.store (i32.add (local.get $keep) (i32.shl (local.get $i) (i32.const 2))) (local.get $ids))
      (local.set $ids (i32x4.add (local.get $ids) (v128.const i32x4 4 4 4 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $quads)))
    (local.set $i (i32.const 0))
    (block $done (loop $pairs
      (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $n)))
      (local.set $x (f64x2.sub (v128.load (i32.add (local.get $z) (i32.shl (local.get $i) (i32.const 3)))) (f64x2.splat (local.get $max))))
      ${expBody()}
      (v128.store (i32.add (local.get $pv) (i32.shl (local.get $i) (i32.const 3))) (local.get $e))
      (local.set $sum (f64x2.add (local.get $sum) (local.get $e)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $pairs)))
    (if (i32.lt_u (local.get $i) (local.get $n))
      (then
        (local.set $x (f64x2.sub (f64x2.splat (f64.load (i32.add (local.get $z) (i32.shl (local.get $i) (i32.const 3))))) (f64x2.splat (local.get $max))))
        ${expBody()}
        (f64.store (i32.add (local.get $pv) (i32.shl (local.get $i) (i32.const 3))) (f64x2.extract_lane 0 (local.get $e)))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.replace_lane 1 (local.get $e) (f64.const 0))))))
    (f64.add (f64x2.extract_lane 0 (local.get $sum)) (f64x2.extract_lane 1 (local.get $sum))))

  (func (export "screen") (param $keep i32) (param $pv i32) (param $cand i32) (param $candU i32) (param $n i32)
      (param $c0 i32) (param $k0 i32) (param $k1 i32) (param $k2 i32) (param $bound f64) (result i32)
    (local $i i32) (local $m i32) (local $mask i32) (local $start v128) (local $w v128) (local $bound2 v128)
    (local $ks0 v128) (local $ks1 v128) (local $ks2 v128)
    (local $a0_0 v128) (local $a1_0 v128) (local $a0_1 v128) (local $a1_1 v128)
    (local.set $ks0 (i32x4.splat (local.get $k0)))
    (local.set $ks1 (i32x4.splat (local.get $k1)))
    (local.set $ks2 (i32x4.splat (local.get $k2)))
    (local.set $start (i32x4.splat (i32.add (local.get $c0) (local.get $k0))))
    (local.set $bound2 (f64x2.splat (local.get $bound)))
    (block $done (loop $octets
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $a0_0 (local.get $start))
      (local.set $a0_1 (local.get $start))
      (local.set $a1_0 (i32x4.add (v128.load (i32.add (local.get $keep) (i32.shl (local.get $i) (i32.const 2)))) (local.get $ks1)))
      (local.set $a1_1 (i32x4.add (v128.load (i32.add (local.get $keep) (i32.shl (i32.add (local.get $i) (i32.const 4)) (i32.const 2)))) (local.get $ks1)))
      ${threefryRounds([0, 1])}
      ${screenPair(0, 0, 0)}
      ${screenPair(0, 1, 2)}
      ${screenPair(1, 0, 4)}
      ${screenPair(1, 1, 6)}
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $octets)))
    (local.get $m))
)`;
}

function compile() {
  return require("wabt")().then((wabt) => {
    const mod = wabt.parseWat("sampler-kernel.wat", wat(), { simd: true, sat_float_to_int: true });
    mod.validate();
    const { buffer } = mod.toBinary({});
    mod.destroy();
    return Buffer.from(buffer);
  });
}

function tsSource(bytes) {
  const b64 = bytes.toString("base64");
  const lines = b64.match(/.{1,100}/g).map((l) => `  "${l}"`);
  return (
    "// Generated by scripts/sampler-kernel.js from the source in that file; do not edit.\n" +
    "// `node scripts/sampler-kernel.js` regenerates it; the test suite checks it is current.\n" +
    "export const SAMPLER_KERNEL_WASM =\n" +
    lines.join(" +\n") +
    ";\n"
  );
}

const target = path.join(__dirname, "..", "src", "sampling", "kernel-wasm.ts");

if (require.main === module) {
  compile().then((bytes) => {
    const text = tsSource(bytes);
    if (process.argv.includes("--check")) {
      const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
      if (current !== text) {
        console.error(`${target} is stale: run node scripts/sampler-kernel.js`);
        process.exit(1);
      }
      console.log("sampler kernel: up to date");
    } else {
      fs.writeFileSync(target, text);
      console.log(`wrote ${target} (${bytes.length} bytes of WebAssembly)`);
    }
  });
}

module.exports = { compile, tsSource, target };
