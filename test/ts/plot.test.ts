/** The PNG encoder and the charts, checked by decoding their output rather than by trusting it. */
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { inflateSync } from "node:zlib";
import { PALETTE, type Rgb, barChart, formatTick, lineChart, niceTicks, scatterChart } from "../../src/plot/chart";
import { encodePng } from "../../src/plot/png";

/** A bit-at-a-time CRC-32, independent of the encoder's table-driven one. */
function referenceCrc(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

interface Decoded {
  width: number;
  height: number;
  chunks: string[];
  /** RGBA pixels, row-major. */
  pixels: Uint8Array;
}

/** Enough of a PNG decoder for the encoder's output: checks framing and CRCs, undoes filter 0. */
function decode(png: Buffer): Decoded {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");
  const chunks: string[] = [];
  const idat: Buffer[] = [];
  let width = 0;
  let height = 0;
  for (let at = 8; at < png.length; ) {
    const len = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + len);
    assert.equal(png.readUInt32BE(at + 8 + len), referenceCrc(png.subarray(at + 4, at + 8 + len)), `CRC of ${type}`);
    chunks.push(type);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.deepEqual([...data.subarray(8)], [8, 6, 0, 0, 0], "8-bit RGBA, no interlace");
    }
    if (type === "IDAT") idat.push(data);
    at += 12 + len;
  }
  assert.equal(chunks[0], "IHDR");
  assert.equal(chunks[chunks.length - 1], "IEND");
  const raw = inflateSync(Buffer.concat(idat));
  assert.equal(raw.length, height * (1 + 4 * width), "inflated IDAT size");
  const pixels = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 4 * width);
    assert.equal(raw[row], 0, `filter byte of row ${y}`);
    pixels.set(raw.subarray(row + 1, row + 1 + 4 * width), y * 4 * width);
  }
  return { width, height, chunks, pixels };
}

function countColour(d: Decoded, c: Rgb): number {
  let n = 0;
  for (let i = 0; i < d.pixels.length; i += 4) {
    if (d.pixels[i] === c[0] && d.pixels[i + 1] === c[1] && d.pixels[i + 2] === c[2] && d.pixels[i + 3] === 255) n++;
  }
  return n;
}

/** Pixels of colour `c` inside the given rectangle (the plot area, away from the legend). */
function countColourIn(d: Decoded, c: Rgb, x0: number, y0: number, x1: number, y1: number): number {
  let n = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = (y * d.width + x) * 4;
      if (d.pixels[i] === c[0] && d.pixels[i + 1] === c[1] && d.pixels[i + 2] === c[2]) n++;
    }
  }
  return n;
}

test("encodePng round-trips a small image exactly", () => {
  const rgba = new Uint8Array([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const d = decode(encodePng(3, 2, rgba));
  assert.equal(d.width, 3);
  assert.equal(d.height, 2);
  assert.deepEqual(d.chunks, ["IHDR", "IDAT", "IEND"]);
  assert.deepEqual([...d.pixels], [...rgba]);
});

test("encodePng rejects a buffer of the wrong size and non-positive dimensions", () => {
  assert.throws(() => encodePng(2, 2, new Uint8Array(15)), RangeError);
  assert.throws(() => encodePng(0, 2, new Uint8Array(0)), RangeError);
  assert.throws(() => encodePng(1.5, 2, new Uint8Array(12)), RangeError);
});

test("niceTicks are evenly spaced at 1/2/5 x 10^k and cover the range", () => {
  const ranges: [number, number][] = [[0, 97], [0, 1], [3, 7], [-42, 17], [0.001, 0.0037], [12345, 98765], [1e6, 3.2e6], [-5, -4.9], [0, 100], [0.5, 0.5000001]];
  for (const [lo, hi] of ranges) {
    const t = niceTicks(lo, hi);
    const where = `ticks of [${lo}, ${hi}]: ${t.join(", ")}`;
    assert.ok(t.length >= 3 && t.length <= 8, where);
    assert.ok(t[0] <= lo && t[t.length - 1] >= hi, where);
    // The difference of two ticks carries rounding error; the step proper is the 1/2/5 value it rounds to.
    const diff = t[1] - t[0];
    const exp = Math.floor(Math.log10(diff));
    const m = [1, 2, 5].find((k) => Math.abs(diff / 10 ** exp - k) < 1e-6);
    assert.ok(m !== undefined, `${where} (step ${diff})`);
    const step = m * 10 ** exp;
    for (let i = 1; i < t.length; i++) assert.ok(Math.abs(t[i] - t[i - 1] - step) < step * 1e-6, where);
    // Every tick a whole multiple of the step, so labels come out round.
    for (const v of t) assert.ok(Math.abs(v / step - Math.round(v / step)) < 1e-6, where);
  }
  assert.deepEqual(niceTicks(0, 97), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
});

test("niceTicks pads degenerate and non-finite ranges instead of failing", () => {
  for (const [lo, hi] of [[5, 5], [0, 0], [NaN, 1], [Infinity, -Infinity], [3, 1]]) {
    const t = niceTicks(lo, hi);
    assert.ok(t.length >= 2 && t.every(Number.isFinite), `${lo}, ${hi}: ${t}`);
    assert.ok(t[t.length - 1] > t[0]);
  }
  const t = niceTicks(5, 5);
  assert.ok(t[0] < 5 && t[t.length - 1] > 5);
});

test("formatTick uses the decimals the step needs", () => {
  assert.equal(formatTick(0.30000000000000004, 0.1), "0.3");
  assert.equal(formatTick(40, 20), "40");
  assert.equal(formatTick(-1e-17, 0.2), "0");
  assert.equal(formatTick(0.025, 0.005), "0.025");
  assert.equal(formatTick(1.2e6, 2e5), "1.2e6");
  assert.equal(formatTick(2e6, 5e5), "2e6");
});

test("lineChart draws every series in its own palette colour", () => {
  const png = lineChart({
    title: "Throughput",
    xLabel: "batch size",
    yLabel: "tokens/s",
    series: [
      { name: "greedy", points: [[1, 10], [2, 30], [4, 55], [8, 90]] },
      { name: "speculative", points: [[1, 20], [2, 50], [4, 80], [8, 120]] },
    ],
    width: 640,
    height: 400,
    yMin: 0,
  });
  const d = decode(png);
  assert.equal(d.width, 640);
  assert.equal(d.height, 400);
  // Well beyond a legend swatch (12x12 = 144 pixels): the lines themselves are there.
  assert.ok(countColour(d, PALETTE[0]) > 400, "first series' colour");
  assert.ok(countColour(d, PALETTE[1]) > 400, "second series' colour");
  assert.equal(countColour(d, PALETTE[2]), 0, "no third series");
});

test("a step line holds each value: its horizontal runs cover more pixels than the straight line's", () => {
  const base = { title: "live batch", xLabel: "t (s)", yLabel: "sequences", width: 500, height: 300 };
  const series = [{ name: "batch", points: [[0, 64], [1, 60], [2, 41], [3, 40], [4, 12]] as [number, number][] }];
  const straight = countColour(decode(lineChart({ ...base, series })), PALETTE[0]);
  const stepped = countColour(decode(lineChart({ ...base, series, step: true })), PALETTE[0]);
  assert.ok(stepped > straight, `${stepped} > ${straight}`);
});

test("barChart draws grouped bars in both series' colours and a reference line", () => {
  const d = decode(
    barChart({
      title: "Speed-up over greedy",
      yLabel: "x",
      groups: ["tiny", "small", "medium"],
      series: [
        { name: "ngram", values: [1.4, 1.9, 2.3] },
        { name: "suffix", values: [1.2, 2.1, NaN] },
      ],
      refLine: 1,
      width: 600,
      height: 360,
    }),
  );
  assert.equal(d.width, 600);
  assert.equal(d.height, 360);
  assert.ok(countColour(d, PALETTE[0]) > 1000);
  assert.ok(countColour(d, PALETTE[1]) > 1000);
  assert.ok(countColour(d, [0x55, 0x55, 0x55]) > 100, "dashed reference line");
});

test("scatterChart draws points and the diagonal", () => {
  const d = decode(
    scatterChart({
      title: "Predicted vs measured step time",
      xLabel: "measured (ms)",
      yLabel: "predicted (ms)",
      series: [
        { name: "decode", points: [[1, 1.1], [2, 1.8], [3, 3.3]] },
        { name: "verify", points: [[4, 4.4], [5, 5.2], [NaN, 2], [6, Infinity]] },
      ],
      diagonal: true,
    }),
  );
  assert.equal(d.width, 800);
  // 3 visible squares of 6x6 for each series, plus its legend swatch (144).
  assert.ok(countColour(d, PALETTE[0]) >= 3 * 36 + 144);
  assert.ok(countColour(d, PALETTE[1]) >= 2 * 36 + 144);
  assert.ok(countColour(d, [0x55, 0x55, 0x55]) > 100, "diagonal");
});

test("degenerate inputs produce valid charts", () => {
  const cases: (() => Buffer)[] = [
    () => lineChart({ title: "", xLabel: "", yLabel: "", series: [] }),
    () => lineChart({ title: "empty", xLabel: "x", yLabel: "y", series: [{ name: "none", points: [] }] }),
    () => lineChart({ title: "one", xLabel: "x", yLabel: "y", series: [{ name: "p", points: [[3, 7]] }] }),
    () => lineChart({ title: "flat", xLabel: "x", yLabel: "y", series: [{ name: "c", points: [[0, 5], [1, 5], [2, 5]] }], step: true }),
    () => lineChart({ title: "zeros", xLabel: "x", yLabel: "y", series: [{ name: "z", points: [[0, 0], [1, 0]] }], yMin: 0 }),
    () => lineChart({ title: "bad", xLabel: "x", yLabel: "y", series: [{ name: "nan", points: [[NaN, 1], [1, Infinity], [-Infinity, 2]] }] }),
    () => lineChart({ title: "tiny", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0, 1], [1, 2]] }], width: 40, height: 30 }),
    () => lineChart({ title: "non-ASCII µs ×", xLabel: "x", yLabel: "y", series: [{ name: "a".repeat(200), points: [[0, 1], [1, 2]] }] }),
    () => barChart({ title: "none", yLabel: "y", groups: [], series: [] }),
    () => barChart({ title: "zeros", yLabel: "y", groups: ["a", "b"], series: [{ name: "s", values: [0, 0] }] }),
    () => barChart({ title: "short", yLabel: "y", groups: ["a", "b", "c"], series: [{ name: "s", values: [2] }] }),
    () => barChart({ title: "negative", yLabel: "y", groups: ["a", "b"], series: [{ name: "s", values: [-3, 4] }], refLine: 1 }),
    () => barChart({ title: "nan", yLabel: "y", groups: ["a"], series: [{ name: "s", values: [NaN] }], refLine: NaN }),
    () => scatterChart({ title: "", xLabel: "", yLabel: "", series: [], diagonal: true }),
    () => scatterChart({ title: "one", xLabel: "x", yLabel: "y", series: [{ name: "p", points: [[2, 2]] }], diagonal: true }),
  ];
  for (const make of cases) {
    const d = decode(make());
    assert.ok(d.width > 0 && d.height > 0);
  }
});

test("a single point is visible, and stays inside the plot", () => {
  const d = decode(lineChart({ title: "one", xLabel: "x", yLabel: "y", series: [{ name: "p", points: [[3, 7]] }], width: 600, height: 400 }));
  // Left of the legend (which sits at the right), so the swatch does not count.
  assert.ok(countColourIn(d, PALETTE[0], 0, 0, 400, 400) >= 36);
});
