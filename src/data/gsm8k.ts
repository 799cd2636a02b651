/**
 * A deterministic generator of GSM8K-style word problems, so the demo and benchmarks need no
 * download. Problem i of a given seed is always the same text.
 */
import { uniforms } from "./uniforms";

const NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Randy", "Mark", "Carla"];
const ITEMS = ["apples", "pencils", "stickers", "cookies", "marbles", "books", "cupcakes", "oranges", "tickets", "shells"];
const PLACES = ["the market", "school", "the fair", "the bakery", "the library", "the beach"];

type Template = (r: () => number) => string;

function pick<T>(xs: readonly T[], r: () => number): T {
  return xs[Math.floor(r() * xs.length)];
}

function int(lo: number, hi: number, r: () => number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

const TEMPLATES: Template[] = [
  (r) => {
    const [n, it, a] = [pick(NAMES, r), pick(ITEMS, r), int(12, 96, r)];
    return `${n} sold ${a} ${it} in April, and then sold half as many ${it} in May. How many ${it} did ${n} sell altogether in April and May?`;
  },
  (r) => {
    const [n, w, m] = [pick(NAMES, r), int(8, 30, r), int(15, 55, r)];
    return `${n} earns $${w} an hour for babysitting. Yesterday, ${n} did ${m} minutes of babysitting. How much did ${n} earn?`;
  },
  (r) => {
    const [n, it, a, b, c] = [pick(NAMES, r), pick(ITEMS, r), int(3, 9, r), int(10, 40, r), int(2, 15, r)];
    return `${n} has ${a} boxes with ${b} ${it} in each box. ${n} gives away ${c} ${it} at ${pick(PLACES, r)}. How many ${it} does ${n} have left?`;
  },
  (r) => {
    const [n, p, q, d] = [pick(NAMES, r), int(2, 12, r), int(3, 20, r), int(2, 7, r)];
    return `${n} buys ${q} notebooks that cost $${p} each and splits the bill equally with ${d - 1} friends. How much does each person pay?`;
  },
  (r) => {
    const [n, m, s, k] = [pick(NAMES, r), int(20, 90, r), int(2, 6, r), int(3, 12, r)];
    return `${n} reads ${k} pages on the first day, and each following day reads ${s} more pages than the day before. A book has ${m} pages. After 4 days, how many pages are left?`;
  },
  (r) => {
    const [a, b, it] = [pick(NAMES, r), pick(NAMES, r), pick(ITEMS, r)];
    const [x, y] = [int(5, 60, r), int(2, 5, r)];
    return `${a} has ${x} ${it}. ${b} has ${y} times as many ${it} as ${a}. How many ${it} do they have together?`;
  },
];

/** `count` problems for `seed`; each asks the model to reason step by step. */
export function gsm8kPrompts(count: number, seed = 0): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = uniforms(seed, 0x6d38, i);
    const t = TEMPLATES[Math.floor(r() * TEMPLATES.length)];
    out.push(`${t(r)} Let's think step by step and end with "The answer is N".`);
  }
  return out;
}
