/**
 * Line, bar and scatter charts rendered to PNG bytes, for benchmark reports, without a plotting
 * dependency: a raster canvas, an embedded 5x7 bitmap font and src/plot/png.ts are all it takes.
 *
 * Charts are meant to be read, not published: no anti-aliasing, one font (drawn at twice its size so
 * it stays legible), a fixed colour-blind-friendly palette, and axis ticks at 1/2/5 x 10^k.
 * Non-finite values are dropped rather than thrown on, so a half-failed benchmark still gets a chart.
 */
import { encodePng } from "./png";

export type Rgb = readonly [number, number, number];

/**
 * Series colours: Okabe-Ito, distinguishable under the common colour-vision deficiencies. Reordered
 * so the first few are the strongest on white; yellow, which is nearly invisible on white, comes late.
 */
export const PALETTE: readonly Rgb[] = [
  [0x00, 0x72, 0xb2], // blue
  [0xe6, 0x9f, 0x00], // orange
  [0x00, 0x9e, 0x73], // bluish green
  [0xd5, 0x5e, 0x00], // vermillion
  [0xcc, 0x79, 0xa7], // reddish purple
  [0x56, 0xb4, 0xe9], // sky blue
  [0xf0, 0xe4, 0x42], // yellow
  [0x00, 0x00, 0x00], // black
];

const WHITE: Rgb = [0xff, 0xff, 0xff];
const TEXT: Rgb = [0x22, 0x22, 0x22];
const AXIS: Rgb = [0x44, 0x44, 0x44];
const GRID: Rgb = [0xe4, 0xe4, 0xe4];
const LEGEND_BORDER: Rgb = [0x99, 0x99, 0x99];
const REF_LINE: Rgb = [0x55, 0x55, 0x55];

/**
 * The classic 5x7 LCD font for ASCII 32-126: five column bytes a glyph, bit 0 the top row, bit 6 the
 * baseline. Bit 7 is a descender row below it, used by g j p q y and the comma: squashed into the 7
 * rows, "g" reads as "9" and "p" as "P".
 */
const FONT = [
  "0000000000", "00005f0000", "0007000700", "147f147f14", "242a7f2a12", // space ! " # $
  "2313086462", "3649552250", "0000070000", "001c224100", "0041221c00", // % & ' ( )
  "082a1c2a08", "08083e0808", "00a0600000", "0808080808", "0060600000", // * + , - .
  "2010080402", "3e5149453e", "00427f4000", "4261514946", "2141454b31", // / 0 1 2 3
  "1814127f10", "2745454539", "3c4a494930", "0171090503", "3649494936", // 4 5 6 7 8
  "064949291e", "0036360000", "0056360000", "0814224100", "1414141414", // 9 : ; < =
  "0041221408", "0201510906", "3249794136", "7e1111117e", "7f49494936", // > ? @ A B
  "3e41414122", "7f4141221c", "7f49494941", "7f09090901", "3e4149497a", // C D E F G
  "7f0808087f", "00417f4100", "2040413f01", "7f08142241", "7f40404040", // H I J K L
  "7f020c027f", "7f0408107f", "3e4141413e", "7f09090906", "3e4151215e", // M N O P Q
  "7f09192946", "4649494931", "01017f0101", "3f4040403f", "1f2040201f", // R S T U V
  "3f4038403f", "6314081463", "0708700807", "6151494543", "007f414100", // W X Y Z [
  "0204081020", "0041417f00", "0402010204", "4040404040", "0001020400", // \ ] ^ _ `
  "2054545478", "7f48444438", "3844444420", "384444487f", "3854545418", // a b c d e
  "087e090102", "98a4a4a47c", "7f08040478", "00447d4000", "4080847d00", // f g h i j
  "7f10284400", "00417f4000", "7c04180478", "7c08040478", "3844444438", // k l m n o
  "fc24242418", "18242424fc", "7c08040408", "4854545420", "043f444020", // p q r s t
  "3c4040207c", "1c2040201c", "3c4030403c", "4428102844", "9ca0a0a07c", // u v w x y
  "4464544c44", "0008364100", "00007f0000", "0041360800", "0804081008", // z { | } ~
].map((hex) => Array.from({ length: 5 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16)));

const SCALE = 2;
const CHAR_W = 6 * SCALE; // 5 columns and 1 of spacing
const CHAR_H = 7 * SCALE; // cap height; descenders hang 1 row below, into the gaps around text

function textWidth(s: string): number {
  return s.length === 0 ? 0 : s.length * CHAR_W - SCALE;
}

/** `s` cut to at most `maxChars`, marking the cut so a truncated label is not mistaken for a whole one. */
function fit(s: string, maxChars: number): string {
  if (s.length <= maxChars) return s;
  return maxChars <= 2 ? s.slice(0, Math.max(0, maxChars)) : s.slice(0, maxChars - 2) + "..";
}

/** An RGBA raster with opaque drawing; every primitive clips to the image. */
export class Canvas {
  readonly data: Uint8Array;

  constructor(readonly width: number, readonly height: number, background: Rgb = WHITE) {
    this.data = new Uint8Array(width * height * 4);
    this.fillRect(0, 0, width, height, background);
  }

  set(x: number, y: number, c: Rgb): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    this.data[i] = c[0];
    this.data[i + 1] = c[1];
    this.data[i + 2] = c[2];
    this.data[i + 3] = 255;
  }

  fillRect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let yy = Math.max(0, y); yy < Math.min(this.height, y + h); yy++) {
      for (let xx = Math.max(0, x); xx < Math.min(this.width, x + w); xx++) this.set(xx, yy, c);
    }
  }

  strokeRect(x: number, y: number, w: number, h: number, c: Rgb): void {
    this.fillRect(x, y, w, 1, c);
    this.fillRect(x, y + h - 1, w, 1, c);
    this.fillRect(x, y, 1, h, c);
    this.fillRect(x + w - 1, y, 1, h, c);
  }

  /**
   * Bresenham from (x0, y0) to (x1, y1), stamping a `thickness`-square brush at each step. A dash
   * pattern [on, off] (in steps) makes reference lines distinguishable from data lines.
   */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thickness = 2, dash?: [number, number]): void {
    x0 = Math.round(x0);
    y0 = Math.round(y0);
    x1 = Math.round(x1);
    y1 = Math.round(y1);
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    // The brush is centred on the line, so a thickness-2 line covers the pixel and the one before it.
    const off = Math.floor((thickness - 1) / 2);
    let err = dx + dy;
    for (let i = 0; ; i++) {
      if (!dash || i % (dash[0] + dash[1]) < dash[0]) this.fillRect(x0 - off, y0 - off, thickness, thickness, c);
      if (x0 === x1 && y0 === y1) break;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  /**
   * `s` with its top-left corner at (x, y); `vertical` runs it bottom-to-top from (x, y) as its
   * bottom-left corner, the usual orientation of a y-axis label. Characters outside ASCII 32-126
   * print as "?" rather than vanishing, so a label that lost a character still shows it lost one.
   */
  text(x: number, y: number, s: string, c: Rgb, vertical = false): void {
    for (let k = 0; k < s.length; k++) {
      const code = s.charCodeAt(k);
      const glyph = FONT[code >= 32 && code <= 126 ? code - 32 : "?".charCodeAt(0) - 32];
      for (let col = 0; col < 5; col++) {
        for (let row = 0; row < 8; row++) {
          if (!((glyph[col] >> row) & 1)) continue;
          const u = k * CHAR_W + col * SCALE; // along the text
          const v = row * SCALE; // across it, top to bottom
          if (vertical) this.fillRect(x + v, y - u - SCALE, SCALE, SCALE, c);
          else this.fillRect(x + u, y + v, SCALE, SCALE, c);
        }
      }
    }
  }

  toPng(): Buffer {
    return encodePng(this.width, this.height, this.data);
  }
}

/** Ranges thinner than this, relative to their magnitude, are treated as a single value. */
const DEGENERATE = 1e-9;

/** A non-empty range [lo, hi], widened around a single value so it still has a scale. */
function padRange(lo: number, hi: number): [number, number] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || lo > hi) return [0, 1];
  if (hi - lo <= DEGENERATE * Math.max(Math.abs(lo), Math.abs(hi))) {
    const d = Math.abs(lo) * 0.1 || 1;
    return [lo - d, hi + d];
  }
  return [lo, hi];
}

/** Removes the binary noise of multiplying a decimal step (3 * 0.1 = 0.30000000000000004). */
function clean(v: number): number {
  return Number(v.toPrecision(12));
}

/**
 * Tick values at a 1, 2 or 5 x 10^k spacing, the first at or below `lo` and the last at or above
 * `hi`, choosing the spacing whose tick count is nearest `target`; on a tie, the one that wastes
 * less of the plot (0..4210 gets 0..5000 in steps of 1000 rather than 0..6000 in steps of 2000).
 */
export function niceTicks(lo: number, hi: number, target = 5): number[] {
  [lo, hi] = padRange(lo, hi);
  const mag = 10 ** Math.floor(Math.log10((hi - lo) / Math.max(1, target - 1)));
  let best = { miss: Infinity, span: Infinity, first: 0, count: 0, step: 1 };
  for (const m of [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]) {
    const step = m * mag;
    // The slack keeps a bound that is already a multiple of the step from gaining an extra tick.
    const first = Math.floor(lo / step + 1e-9);
    const last = Math.ceil(hi / step - 1e-9);
    const miss = Math.abs(last - first + 1 - target);
    const span = (last - first) * step;
    if (miss < best.miss || (miss === best.miss && span < best.span)) best = { miss, span, first, count: last - first + 1, step };
  }
  return Array.from({ length: best.count }, (_, i) => clean((best.first + i) * best.step));
}

/** A tick label with only as many decimals as the spacing needs; exponents at the extremes. */
export function formatTick(v: number, step: number): string {
  if (Math.abs(v) < step / 2) return "0"; // also keeps "-0" off the axis
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) {
    const digits = Math.min(6, Math.max(0, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step) + 1e-9)));
    return v.toExponential(digits).replace(/\.?0+e/, "e").replace("e+", "e");
  }
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

/** An axis: its ticks, the range they span (wider than the data), and their spacing. */
interface Axis {
  ticks: number[];
  lo: number;
  hi: number;
  step: number;
}

/**
 * Fewer ticks on a small chart, so that labels (up to ~6 characters, 70 pixels wide) stay apart:
 * one per `perTick` pixels of the image's extent less its margins, at most 5 (reached at 800x500).
 */
function tickTarget(pixels: number, perTick: number): number {
  return Math.max(3, Math.min(5, Math.floor(pixels / perTick)));
}

function axis(lo: number, hi: number, target = 5): Axis {
  const ticks = niceTicks(lo, hi, target);
  return { ticks, lo: ticks[0], hi: ticks[ticks.length - 1], step: ticks.length > 1 ? ticks[1] - ticks[0] : 1 };
}

/** Finite min and max of `values`, or [Infinity, -Infinity] when there are none. */
function extent(values: Iterable<number>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/**
 * The value range to plot: the data's, stretched to take in `include` (a floor such as 0), padded
 * when degenerate, but never padded below a floor that the data does not go under.
 */
function valueRange(data: Iterable<number>, include: number[]): [number, number] {
  const [dlo, dhi] = extent(data);
  const [ilo, ihi] = extent(include);
  let [lo, hi] = padRange(Math.min(dlo, ilo), Math.max(dhi, ihi));
  if (Number.isFinite(ilo) && lo < ilo && !(dlo < ilo)) lo = ilo;
  if (!(hi > lo)) hi = lo + 1;
  return [lo, hi];
}

interface FrameOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  legend: string[];
  width: number;
  height: number;
  y: Axis;
  /** Numeric x axis; absent for bar charts, whose x axis is the group labels. */
  x?: Axis;
}

/** The plot area inside the frame, and the mapping from data to pixels. */
interface Frame {
  left: number;
  top: number;
  right: number;
  bottom: number;
  px(x: number): number;
  py(y: number): number;
}

const MARGIN = 12;
const GAP = 8;
const SWATCH = 12;
const LEGEND_ROW = CHAR_H + 8;

/**
 * Draws title, legend, axes, gridlines, ticks and axis labels, and returns the plot area. The legend
 * sits outside the plot, to the right, so it can never hide data; names are cut to keep it at most a
 * third of the image wide.
 */
function drawFrame(c: Canvas, o: FrameOptions): Frame {
  const yLabels = o.y.ticks.map((t) => formatTick(t, o.y.step));
  const top = MARGIN + (o.title ? CHAR_H + 2 * GAP : 0);
  const left = MARGIN + (o.yLabel ? CHAR_H + 2 * GAP : 0) + Math.max(...yLabels.map(textWidth)) + GAP;
  const bottom = o.height - MARGIN - CHAR_H - GAP - (o.xLabel ? CHAR_H + GAP : 0);

  const maxNameChars = Math.max(1, Math.floor((o.width / 3 - SWATCH - 3 * GAP) / CHAR_W));
  const names = o.legend.map((n) => fit(n, maxNameChars));
  const legendW = names.length ? 3 * GAP + SWATCH + Math.max(...names.map(textWidth)) : 0;
  // The last x tick label is centred on the plot's right edge; leave room for its right half.
  const xLast = o.x ? formatTick(o.x.hi, o.x.step) : "";
  const right = o.width - Math.max(MARGIN, Math.ceil(textWidth(xLast) / 2) + 2) - (legendW ? legendW + 2 * GAP : 0);

  const w = Math.max(1, right - left);
  const h = Math.max(1, bottom - top);
  const frame: Frame = {
    left,
    top,
    right,
    bottom,
    px: (x) => (o.x ? left + Math.round(((x - o.x.lo) / (o.x.hi - o.x.lo)) * w) : left),
    py: (y) => bottom - Math.round(((y - o.y.lo) / (o.y.hi - o.y.lo)) * h),
  };

  if (o.title) {
    const t = fit(o.title, Math.floor((o.width - 2 * MARGIN) / CHAR_W));
    c.text(Math.round((o.width - textWidth(t)) / 2), MARGIN, t, TEXT);
  }

  o.y.ticks.forEach((t, i) => {
    const y = frame.py(t);
    c.fillRect(left, y, w, 1, GRID);
    c.fillRect(left - 4, y, 4, 1, AXIS);
    c.text(left - GAP - textWidth(yLabels[i]), y - Math.floor(CHAR_H / 2), yLabels[i], TEXT);
  });
  if (o.x) {
    const xAxis = o.x;
    for (const t of xAxis.ticks) {
      const x = frame.px(t);
      const label = formatTick(t, xAxis.step);
      c.fillRect(x, top, 1, h, GRID);
      c.fillRect(x, bottom, 1, 4, AXIS);
      c.text(x - Math.floor(textWidth(label) / 2), bottom + GAP, label, TEXT);
    }
  }
  c.fillRect(left, top, 1, h + 1, AXIS);
  c.fillRect(left, bottom, w + 1, 1, AXIS);

  if (o.xLabel) {
    const t = fit(o.xLabel, Math.floor(w / CHAR_W));
    c.text(left + Math.round((w - textWidth(t)) / 2), o.height - MARGIN - CHAR_H, t, TEXT);
  }
  if (o.yLabel) {
    const t = fit(o.yLabel, Math.floor(h / CHAR_W));
    c.text(MARGIN, top + Math.round((h + textWidth(t)) / 2), t, TEXT, true);
  }

  if (names.length) {
    const lx = right + 2 * GAP;
    const lh = names.length * LEGEND_ROW + GAP;
    c.fillRect(lx, top, legendW, lh, WHITE);
    c.strokeRect(lx, top, legendW, lh, LEGEND_BORDER);
    names.forEach((name, i) => {
      const y = top + GAP + i * LEGEND_ROW;
      c.fillRect(lx + GAP, y + 1, SWATCH, SWATCH, PALETTE[i % PALETTE.length]);
      c.text(lx + 2 * GAP + SWATCH, y, name, TEXT);
    });
  }
  return frame;
}

export interface XYSeries {
  name: string;
  points: [number, number][];
}

function finitePoints(points: [number, number][]): [number, number][] {
  return points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
}

/** What every x-y chart takes. */
interface XYChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: XYSeries[];
  width?: number;
  height?: number;
}

export interface LineChartOptions extends XYChartOptions {
  /** A floor for the y axis (typically 0), kept unless the data goes below it. */
  yMin?: number;
  /** Draw each value as holding until the next point (a live batch size, a queue depth). */
  step?: boolean;
}

/** One line per series, points joined in x order; a lone point is drawn as a square to stay visible. */
export function lineChart(opts: LineChartOptions): Buffer {
  const width = opts.width ?? 800;
  const height = opts.height ?? 500;
  const series = opts.series.map((s) => finitePoints(s.points).sort((a, b) => a[0] - b[0]));
  const all = series.flat();
  const x = axis(...valueRange(all.map((p) => p[0]), []), tickTarget(width - 200, 110));
  const y = axis(...valueRange(all.map((p) => p[1]), opts.yMin === undefined ? [] : [opts.yMin]), tickTarget(height - 100, 60));
  const c = new Canvas(width, height);
  const f = drawFrame(c, { ...opts, legend: opts.series.map((s) => s.name), width, height, x, y });
  series.forEach((pts, i) => {
    const color = PALETTE[i % PALETTE.length];
    if (pts.length === 1) c.fillRect(f.px(pts[0][0]) - 3, f.py(pts[0][1]) - 3, 6, 6, color);
    for (let k = 1; k < pts.length; k++) {
      const [x0, y0] = pts[k - 1];
      const [x1, y1] = pts[k];
      if (opts.step) {
        c.line(f.px(x0), f.py(y0), f.px(x1), f.py(y0), color);
        c.line(f.px(x1), f.py(y0), f.px(x1), f.py(y1), color);
      } else {
        c.line(f.px(x0), f.py(y0), f.px(x1), f.py(y1), color);
      }
    }
  });
  return c.toPng();
}

export interface ScatterChartOptions extends XYChartOptions {
  /**
   * Draw y = x (for predicted against measured). Both axes then share one range, so the diagonal
   * runs corner to corner and distance from it reads the same in either direction.
   */
  diagonal?: boolean;
}

export function scatterChart(opts: ScatterChartOptions): Buffer {
  const width = opts.width ?? 800;
  const height = opts.height ?? 500;
  const series = opts.series.map((s) => finitePoints(s.points));
  const all = series.flat();
  let xr = valueRange(all.map((p) => p[0]), []);
  let yr = valueRange(all.map((p) => p[1]), []);
  if (opts.diagonal) xr = yr = valueRange([...xr, ...yr], []);
  const x = axis(...xr, tickTarget(width - 200, 110));
  const y = axis(...yr, tickTarget(height - 100, 60));
  const c = new Canvas(width, height);
  const f = drawFrame(c, { ...opts, legend: opts.series.map((s) => s.name), width, height, x, y });
  if (opts.diagonal) {
    const lo = Math.max(x.lo, y.lo);
    const hi = Math.min(x.hi, y.hi);
    c.line(f.px(lo), f.py(lo), f.px(hi), f.py(hi), REF_LINE, 1, [6, 4]);
  }
  series.forEach((pts, i) => {
    const color = PALETTE[i % PALETTE.length];
    for (const [px, py] of pts) c.fillRect(f.px(px) - 3, f.py(py) - 3, 6, 6, color);
  });
  return c.toPng();
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  groups: string[];
  /** `values[g]` is the series' bar in group `g`; missing or non-finite values leave a gap. */
  series: { name: string; values: number[] }[];
  width?: number;
  height?: number;
  /** A dashed horizontal line, e.g. at 1.0 on a speed-up chart. */
  refLine?: number;
}

/** Bars grow from 0 (downward for negative values), one colour per series, grouped side by side. */
export function barChart(opts: BarChartOptions): Buffer {
  const width = opts.width ?? 800;
  const height = opts.height ?? 500;
  const include = [0];
  if (opts.refLine !== undefined && Number.isFinite(opts.refLine)) include.push(opts.refLine);
  const y = axis(...valueRange(opts.series.flatMap((s) => s.values.slice(0, opts.groups.length)), include), tickTarget(height - 100, 60));
  const c = new Canvas(width, height);
  const f = drawFrame(c, { ...opts, xLabel: "", legend: opts.series.map((s) => s.name), width, height, y });

  const n = Math.max(1, opts.groups.length);
  const slot = (f.right - f.left) / n;
  const barW = Math.max(1, Math.floor((slot * 0.8) / Math.max(1, opts.series.length)));
  const zero = f.py(0);
  opts.groups.forEach((g, gi) => {
    const start = Math.round(f.left + gi * slot + (slot - barW * opts.series.length) / 2);
    opts.series.forEach((s, si) => {
      const v = s.values[gi];
      if (!Number.isFinite(v)) return;
      const top = Math.min(zero, f.py(v));
      // A bar of value 0 still gets a 1-pixel sliver so it reads as "measured, zero" and not "missing".
      c.fillRect(start + si * barW, top, barW, Math.max(1, Math.abs(f.py(v) - zero)), PALETTE[si % PALETTE.length]);
    });
    const label = fit(g, Math.max(1, Math.floor(slot / CHAR_W)));
    c.text(Math.round(f.left + gi * slot + (slot - textWidth(label)) / 2), f.bottom + GAP, label, TEXT);
  });
  // Bars cover the axis line where they touch it; redraw it so the baseline stays continuous.
  c.fillRect(f.left, f.bottom, f.right - f.left + 1, 1, AXIS);
  if (y.lo < 0) c.fillRect(f.left, zero, f.right - f.left + 1, 1, AXIS);
  if (opts.refLine !== undefined && Number.isFinite(opts.refLine)) {
    c.line(f.left, f.py(opts.refLine), f.right, f.py(opts.refLine), REF_LINE, 2, [8, 6]);
  }
  return c.toPng();
}
