/**
 * A deterministic generator of "edit" prompts: each asks the model to reproduce a document (a JSON
 * record or a Python/JavaScript snippet) with one stated change. Most of a correct response is a
 * verbatim copy of the prompt, which is the regime where prompt-lookup and suffix drafters shine;
 * the GSM8K set is the opposite regime. Task i of a given seed is always the same text, and even
 * indices are JSON records, odd indices code snippets.
 *
 * Documents are 600-1600 characters (about 150-400 BPE tokens), pretty-printed JSON with nested
 * objects and arrays, or one of several function templates with drawn identifiers and literals.
 * Each task also carries the expected edited document, so a benchmark can check a response or
 * measure how much of it was copied (see copy-share.ts).
 */
import { uniforms } from "./uniforms";
import { gsm8kPrompts } from "./gsm8k";

type Rand = () => number;
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type PathKey = string | number;

export type EditKind = "json" | "python" | "javascript";

export interface EditTask {
  prompt: string;
  /** The document as it appears in the prompt. */
  document: string;
  /** The document with the stated change applied (the ideal response, without the code fence). */
  expected: string;
  kind: EditKind;
  /** JSON tasks only: the path of the changed leaf and its new value. */
  path?: PathKey[];
  value?: Json;
}

/** Document length bounds in characters (about 150-400 tokens under a typical BPE tokenizer). */
export const EDIT_DOC_MIN_CHARS = 600;
export const EDIT_DOC_MAX_CHARS = 1600;
// Generation aims inside the bounds with a margin; out-of-range drafts are redrawn.
const AIM_MIN = 640;
const AIM_MAX = 1560;
const PIECES_MIN = 200;
const PIECES_MAX = 430;

/**
 * A tokenizer-free, deliberately high token estimate: one per digit, per run of letters, per other
 * symbol and per run of whitespace. Tokenizers that split numbers into single digits (SmolLM2,
 * Llama 2, Qwen) give about 0.7-0.95 of it on these documents; ones that group digits give fewer.
 * Documents are drawn until it lies in [200, 430] (and the length in characters in bounds), which
 * keeps them at about 150-400 real tokens.
 */
export function approxTokens(text: string): number {
  return text.match(/[0-9]|[A-Za-z]+|\s+|[^\sA-Za-z0-9]/g)?.length ?? 0;
}

function fits(doc: string): boolean {
  if (doc.length < AIM_MIN || doc.length > AIM_MAX) return false;
  const t = approxTokens(doc);
  return t >= PIECES_MIN && t <= PIECES_MAX;
}

function pick<T>(xs: readonly T[], r: Rand): T {
  return xs[Math.floor(r() * xs.length)];
}

function int(lo: number, hi: number, r: Rand): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

/** `k` distinct elements of `xs`, in drawn order. */
function sample<T>(xs: readonly T[], k: number, r: Rand): T[] {
  const pool = xs.slice();
  const out: T[] = [];
  while (out.length < k && pool.length > 0) out.push(pool.splice(Math.floor(r() * pool.length), 1)[0]);
  return out;
}

function other<T>(xs: readonly T[], not: T, r: Rand): T {
  const rest = xs.filter((x) => x !== not);
  return pick(rest.length > 0 ? rest : xs, r);
}

function digits(n: number, r: Rand): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String(int(0, 9, r));
  return s;
}

function letters(n: number, r: Rand): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(65 + int(0, 25, r));
  return s;
}

const pad2 = (n: number) => String(n).padStart(2, "0");

function date(r: Rand): string {
  return `${int(2021, 2025, r)}-${pad2(int(1, 12, r))}-${pad2(int(1, 28, r))}`;
}

function timestamp(r: Rand): string {
  return `${date(r)}T${pad2(int(6, 22, r))}:${pad2(5 * int(0, 11, r))}:00Z`;
}

const money = (lo: number, hi: number, r: Rand) => int(lo * 100, hi * 100, r) / 100;

// ---------------------------------------------------------------------------------------------
// JSON records

const FIRST = ["Amelia", "Bruno", "Chiara", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ibrahim", "Jonas", "Keiko", "Lucas", "Maya", "Nikhil", "Olivia", "Pedro", "Quinn", "Rosa", "Samir", "Talia"];
const LAST = ["Moreau", "Okafor", "Lindqvist", "Tanaka", "Rossi", "Kowalski", "Haddad", "Fischer", "Nguyen", "Alvarez", "Brennan", "Costa", "Novak", "Sato", "Weber", "Duarte"];
const CITY_COUNTRY: readonly [string, string][] = [
  ["Lyon", "France"], ["Porto", "Portugal"], ["Leipzig", "Germany"], ["Utrecht", "Netherlands"], ["Bologna", "Italy"],
  ["Krakow", "Poland"], ["Gothenburg", "Sweden"], ["Valencia", "Spain"], ["Osaka", "Japan"], ["Austin", "United States"],
  ["Montreal", "Canada"], ["Melbourne", "Australia"], ["Dublin", "Ireland"], ["Tallinn", "Estonia"], ["Ghent", "Belgium"],
];
const STREETS = ["Rue Garibaldi", "Baker Street", "Calle Mayor", "Hauptstrasse", "Oak Avenue", "Via Roma", "Maple Lane", "Harbour Road", "Kings Parade", "Elm Street"];
const DOMAINS = ["example.com", "mail.example.org", "acme.io", "northwind.net", "contoso.dev"];
const BRANDS = ["Northwind", "Fabrikam", "Lumen", "Kestrel", "Arbor", "Halcyon", "Vantage", "Corvid"];
const PRODUCTS = ["Trail Running Shoe", "Insulated Water Bottle", "Wireless Keyboard", "Ceramic Pour-Over Set", "Folding Camp Chair", "Noise-Cancelling Headphones", "Standing Desk Frame", "Merino Wool Sweater"];
const TAGS = ["outdoor", "bestseller", "eco", "limited", "gift", "new", "clearance", "premium", "travel", "office"];
const EVENTS = ["Data Engineering Summit", "Frontend Days", "Open Source Meetup", "Applied ML Forum", "Cloud Native Workshop", "Security Week"];
const VENUES = ["Grand Hall", "Riverside Center", "The Foundry", "Congress Palace", "Harbor Pavilion", "Old Town Theatre"];
const TOPICS = ["Streaming joins at scale", "Type-safe APIs", "Observability on a budget", "Fine-tuning small models", "Zero-downtime migrations", "Testing flaky systems", "Caching strategies", "Accessible design systems"];
const SERVICES = ["billing-api", "search-indexer", "auth-gateway", "image-resizer", "notification-worker", "ledger-service"];
const REGIONS = ["eu-west-1", "us-east-2", "ap-northeast-1", "eu-central-1", "us-west-2"];
const JOB_TITLES = ["Backend Engineer", "Data Analyst", "Product Designer", "Site Reliability Engineer", "Engineering Manager", "QA Specialist"];
const SKILLS = ["Python", "TypeScript", "SQL", "Kubernetes", "Figma", "Go", "Terraform", "Spark", "Rust", "GraphQL", "Kafka", "React"];
const PROJECT_NAMES = ["Atlas", "Beacon", "Cobalt", "Drift", "Ember", "Fjord", "Granite", "Harbor"];
const AIRPORTS = ["LYS", "OPO", "LEJ", "AMS", "BLQ", "KRK", "GOT", "VLC", "KIX", "AUS", "YUL", "MEL", "DUB", "TLL"];
const AIRLINES = ["AF", "TP", "LH", "KL", "AZ", "LO", "SK", "IB", "NH", "AA"];

/** String values that may be edited, by key: the replacement is drawn from the same pool. */
const KEY_POOLS: Record<string, readonly string[]> = {
  city: CITY_COUNTRY.map(([c]) => c),
  country: CITY_COUNTRY.map(([, c]) => c),
  status: ["pending", "processing", "shipped", "delivered", "cancelled", "returned"],
  currency: ["EUR", "USD", "GBP", "JPY", "CAD", "SEK", "PLN"],
  language: ["en", "fr", "de", "es", "it", "pt", "ja", "nl"],
  theme: ["light", "dark", "system", "high-contrast"],
  tier: ["Bronze", "Silver", "Gold", "Platinum"],
  ticketType: ["Standard", "VIP", "Early bird", "Student", "Group"],
  department: ["Engineering", "Finance", "Marketing", "Operations", "Research", "Support"],
  role: ["lead", "contributor", "reviewer", "advisor", "owner"],
  protocol: ["TCP", "UDP"],
  cabin: ["economy", "premium economy", "business", "first"],
  category: ["footwear", "kitchen", "electronics", "furniture", "apparel", "outdoor"],
  brand: BRANDS,
  LOG_LEVEL: ["debug", "info", "warn", "error"],
  REGION: REGIONS,
  office: ["HQ", "North Campus", "Downtown Hub", "Harbour Office", "Tech Park"],
  unit: ["cm", "mm", "in"],
};

function person(r: Rand): [string, string] {
  return [pick(FIRST, r), pick(LAST, r)];
}

function email(first: string, last: string, r: Rand): string {
  return `${first}.${last}@${pick(DOMAINS, r)}`.toLowerCase();
}

type Schema = { intro: string; build: (r: Rand) => { [key: string]: Json } };

const SCHEMAS: Schema[] = [
  {
    intro: "a customer record",
    build: (r) => {
      const [first, last] = person(r);
      const [city, country] = pick(CITY_COUNTRY, r);
      const currency = pick(KEY_POOLS.currency, r);
      return {
        customerId: `C-${digits(6, r)}`,
        name: `${first} ${last}`,
        email: email(first, last, r),
        phone: `+${int(1, 49, r)} ${digits(3, r)} ${digits(3, r)} ${digits(4, r)}`,
        address: { street: `${int(1, 180, r)} ${pick(STREETS, r)}`, city, postalCode: digits(5, r), country },
        preferences: { newsletter: r() < 0.5, language: pick(KEY_POOLS.language, r), theme: pick(KEY_POOLS.theme, r) },
        loyalty: { tier: pick(KEY_POOLS.tier, r), points: int(0, 25000, r), memberSince: date(r) },
        orders: Array.from({ length: int(1, 3, r) }, () => ({
          orderId: `ORD-${digits(7, r)}`,
          placedAt: timestamp(r),
          status: pick(KEY_POOLS.status, r),
          items: int(1, 9, r),
          total: money(8, 640, r),
          currency,
        })),
      };
    },
  },
  {
    intro: "a product catalog entry",
    build: (r) => {
      const currency = pick(KEY_POOLS.currency, r);
      return {
        sku: `${letters(3, r)}-${digits(5, r)}`,
        title: pick(PRODUCTS, r),
        brand: pick(BRANDS, r),
        category: pick(KEY_POOLS.category, r),
        price: { amount: money(9, 420, r), currency, discountPercent: 5 * int(0, 8, r) },
        dimensions: { width: int(5, 120, r), height: int(5, 120, r), depth: int(2, 60, r), unit: pick(KEY_POOLS.unit, r) },
        weightKg: int(1, 250, r) / 10,
        inStock: r() < 0.7,
        stock: sample(CITY_COUNTRY, int(2, 4, r), r).map(([city]) => ({ warehouse: `WH-${letters(2, r)}${digits(2, r)}`, city, quantity: int(0, 900, r) })),
        tags: sample(TAGS, int(2, 5, r), r),
        rating: { average: int(25, 50, r) / 10, count: int(3, 4800, r) },
      };
    },
  },
  {
    intro: "an event listing",
    build: (r) => {
      const [city] = pick(CITY_COUNTRY, r);
      const [of, ol] = person(r);
      const currency = pick(KEY_POOLS.currency, r);
      const day = date(r);
      return {
        eventId: `EV-${digits(5, r)}`,
        title: `${pick(EVENTS, r)} ${int(2022, 2026, r)}`,
        venue: { name: pick(VENUES, r), city, capacity: 50 * int(4, 60, r) },
        startsAt: `${day}T09:00:00Z`,
        endsAt: `${day}T${pad2(int(15, 19, r))}:30:00Z`,
        organizer: { name: `${of} ${ol}`, email: email(of, ol, r) },
        tickets: sample(KEY_POOLS.ticketType, int(2, 3, r), r).map((ticketType) => ({ ticketType, price: money(0, 350, r), currency, available: int(0, 400, r) })),
        speakers: Array.from({ length: int(1, 3, r) }, () => {
          const [f, l] = person(r);
          return { name: `${f} ${l}`, topic: pick(TOPICS, r), durationMinutes: 5 * int(4, 12, r) };
        }),
        published: r() < 0.6,
      };
    },
  },
  {
    intro: "a service deployment config",
    build: (r) => {
      const replicas = int(1, 6, r);
      return {
        service: pick(SERVICES, r),
        version: `${int(1, 4, r)}.${int(0, 19, r)}.${int(0, 9, r)}`,
        image: `registry.example.com/platform/${pick(SERVICES, r)}:${digits(7, r)}`,
        replicas,
        env: { LOG_LEVEL: pick(KEY_POOLS.LOG_LEVEL, r), REGION: pick(REGIONS, r), MAX_CONNECTIONS: String(10 * int(2, 50, r)), FEATURE_FLAGS: sample(["beta-ui", "fast-path", "audit-log", "dark-launch"], int(1, 3, r), r).join(",") },
        ports: sample(["http", "grpc", "metrics", "admin"], int(2, 3, r), r).map((name) => ({ name, containerPort: int(1, 9, r) * 1000 + int(0, 99, r), protocol: "TCP" })),
        resources: {
          limits: { cpu: `${int(1, 8, r) * 250}m`, memoryMi: 128 * int(2, 32, r) },
          requests: { cpu: `${int(1, 4, r) * 100}m`, memoryMi: 64 * int(2, 16, r) },
        },
        healthCheck: { path: pick(["/healthz", "/ready", "/status"], r), intervalSeconds: int(5, 60, r), timeoutSeconds: int(1, 5, r), failureThreshold: int(2, 6, r) },
        autoscaling: { enabled: r() < 0.5, minReplicas: replicas, maxReplicas: replicas + int(2, 20, r), targetCpuPercent: 5 * int(10, 18, r) },
      };
    },
  },
  {
    intro: "an employee profile",
    build: (r) => {
      const [first, last] = person(r);
      const [mf, ml] = person(r);
      const [city, country] = pick(CITY_COUNTRY, r);
      return {
        employeeId: `E${digits(5, r)}`,
        fullName: `${first} ${last}`,
        jobTitle: pick(JOB_TITLES, r),
        department: pick(KEY_POOLS.department, r),
        startDate: date(r),
        manager: { name: `${mf} ${ml}`, employeeId: `E${digits(5, r)}` },
        location: { office: pick(KEY_POOLS.office, r), city, country, remote: r() < 0.4 },
        skills: sample(SKILLS, int(3, 6, r), r),
        projects: sample(PROJECT_NAMES, int(2, 4, r), r).map((name) => ({ code: `${name.slice(0, 3).toUpperCase()}-${digits(3, r)}`, name, role: pick(KEY_POOLS.role, r), hoursPerWeek: int(2, 30, r) })),
        salaryBand: `L${int(2, 7, r)}`,
        onCall: r() < 0.5,
      };
    },
  },
  {
    intro: "a flight booking",
    build: (r) => {
      const [first, last] = person(r);
      const stops = sample(AIRPORTS, int(2, 3, r), r);
      const currency = pick(KEY_POOLS.currency, r);
      const base = money(80, 1400, r);
      return {
        bookingRef: letters(6, r),
        passenger: { firstName: first, lastName: last, email: email(first, last, r), frequentFlyer: { program: `${pick(AIRLINES, r)} Miles`, number: digits(9, r), tier: pick(KEY_POOLS.tier, r) } },
        segments: stops.slice(1).map((to, k) => {
          const d = timestamp(r);
          return { flight: `${pick(AIRLINES, r)}${int(100, 9999, r)}`, from: stops[k], to, departure: d, arrival: `${d.slice(0, 11)}${pad2(int(6, 23, r))}:${pad2(5 * int(0, 11, r))}:00Z`, seat: `${int(1, 42, r)}${pick(["A", "B", "C", "D", "E", "F"], r)}`, cabin: pick(KEY_POOLS.cabin, r) };
        }),
        baggage: { checkedBags: int(0, 3, r), cabinBags: int(1, 2, r), maxWeightKg: pick([20, 23, 25, 32], r) },
        fare: { base, taxes: money(15, 180, r), currency, refundable: r() < 0.3 },
      };
    },
  },
];

type Leaf = { path: PathKey[]; key: string; value: Json };

function leaves(v: Json, path: PathKey[], key: string, out: Leaf[]): Leaf[] {
  if (Array.isArray(v)) v.forEach((x, i) => leaves(x, [...path, i], key, out));
  else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v)) leaves(x, [...path, k], k, out);
  else out.push({ path, key, value: v });
  return out;
}

function editable(l: Leaf): boolean {
  if (typeof l.value === "number" || typeof l.value === "boolean") return true;
  return typeof l.value === "string" && l.key in KEY_POOLS && KEY_POOLS[l.key].length > 1;
}

function newValue(l: Leaf, r: Rand): Json {
  const v = l.value;
  if (typeof v === "boolean") return !v;
  if (typeof v === "string") return other(KEY_POOLS[l.key], v, r);
  if (typeof v === "number") {
    if (Number.isInteger(v)) {
      const step = Math.max(1, Math.round(Math.abs(v) * 0.4));
      const delta = int(1, step, r) * (v > 0 && r() < 0.5 ? -1 : 1);
      return v + delta === v ? v + 1 : v + delta;
    }
    const scale = Number.isInteger(v * 10) ? 10 : 100;
    let w = Math.round(v * (0.6 + 0.8 * r()) * scale) / scale;
    if (w === v || w <= 0) w = Math.round((v + 1 / scale) * scale) / scale;
    return w;
  }
  return v;
}

function setAt(doc: Json, path: PathKey[], value: Json): Json {
  const copy: Json = JSON.parse(JSON.stringify(doc));
  let node = copy as any;
  for (const k of path.slice(0, -1)) node = node[k];
  node[path[path.length - 1]] = value;
  return copy;
}

function pathText(path: PathKey[]): string {
  return path.map((k, i) => (typeof k === "number" ? `[${k}]` : i === 0 ? k : `.${k}`)).join("");
}

function jsonTask(r: Rand): EditTask {
  let obj: { [key: string]: Json } = {};
  let indent = 2;
  let doc = "";
  for (let tries = 0; tries < 64; tries++) {
    const schema = pick(SCHEMAS, r);
    obj = schema.build(r);
    indent = r() < 0.8 ? 2 : 4;
    doc = JSON.stringify(obj, null, indent);
    if (fits(doc)) {
      const all = leaves(obj, [], "", []);
      const target = pick(all.filter(editable), r);
      const value = newValue(target, r);
      const edited = setAt(obj, target.path, value);
      // name a key by itself when it is unique in the record, else by its full path
      const unique = all.filter((l) => l.key === target.key).length === 1;
      const where = unique ? target.key : pathText(target.path);
      const prompt =
        `Here is ${schema.intro} in JSON. Change the value of "${where}" to ${JSON.stringify(value)} and output the whole record, otherwise unchanged. ` +
        "Output only the edited JSON, with no explanation.\n\n```json\n" + doc + "\n```";
      return { prompt, document: doc, expected: JSON.stringify(edited, null, indent), kind: "json", path: target.path, value };
    }
  }
  throw new Error("edit generator: no JSON record within the length bounds"); // not reached in practice
}

// ---------------------------------------------------------------------------------------------
// Code snippets. A template renders from names and literals; an edit re-renders with one of them
// changed (a rename, a new constant, or a constant promoted to a new trailing parameter), so the
// expected document is exact by construction.

interface ConstSpec {
  /** What the constant is, for the instruction: "the request timeout". */
  desc: string;
  gen: (r: Rand) => number;
  /** The parameter name when the constant is promoted to an argument. */
  param: string;
}

interface CodeTemplate {
  lang: "python" | "javascript";
  fns: readonly string[];
  /** Local variable slots, each with its pool of names (pools are disjoint within a template). */
  vars: Record<string, readonly string[]>;
  consts: Record<string, ConstSpec>;
  /** `extra` is "" or the trailing parameter text (", name=value" / ", name = value"). */
  render: (fn: string, v: Record<string, string>, c: Record<string, string>, extra: string) => string;
}

const PY: CodeTemplate[] = [
  {
    lang: "python",
    fns: ["fetch_with_retry", "get_json", "load_remote", "fetch_payload"],
    vars: { url: ["url", "endpoint", "address"], session: ["session", "client", "http"], resp: ["resp", "response", "reply"], delay: ["delay", "wait_s", "backoff"], attempt: ["attempt", "try_no", "round_no"], err: ["err", "exc", "error"] },
    consts: {
      retries: { desc: "the number of retries", gen: (r) => int(3, 8, r), param: "max_retries" },
      delay: { desc: "the initial backoff delay", gen: (r) => int(2, 9, r) / 10, param: "initial_delay" },
      cap: { desc: "the maximum backoff delay", gen: (r) => int(10, 60, r), param: "max_delay" },
      timeout: { desc: "the request timeout", gen: (r) => int(5, 30, r) + 0.5, param: "timeout" },
    },
    render: (fn, v, c, x) => `import time
import logging

logger = logging.getLogger(__name__)


def ${fn}(${v.url}, ${v.session}${x}):
    """Fetch a JSON payload, retrying on transient errors with exponential backoff."""
    ${v.delay} = ${c.delay}
    for ${v.attempt} in range(1, ${c.retries} + 1):
        try:
            ${v.resp} = ${v.session}.get(${v.url}, timeout=${c.timeout})
            if ${v.resp}.status_code == 200:
                return ${v.resp}.json()
            if ${v.resp}.status_code in (429, 503):
                logger.warning("server busy (%s), try %d", ${v.resp}.status_code, ${v.attempt})
            else:
                ${v.resp}.raise_for_status()
        except ConnectionError as ${v.err}:
            logger.warning("connection failed: %s", ${v.err})
        time.sleep(${v.delay})
        ${v.delay} = min(${v.delay} * 2, ${c.cap})
    raise RuntimeError(f"giving up on {${v.url}}")
`,
  },
  {
    lang: "python",
    fns: ["summarize_orders", "order_report", "totals_by_customer", "build_invoice_summary"],
    vars: { orders: ["orders", "records", "rows"], totals: ["totals", "by_customer", "sums"], order: ["order", "rec", "item"], amount: ["amount", "value", "subtotal"], key: ["key", "customer", "cid"], report: ["report", "summary", "out"] },
    consts: {
      tax: { desc: "the tax rate", gen: (r) => int(5, 25, r) / 100, param: "tax_rate" },
      threshold: { desc: "the discount threshold", gen: (r) => 50 * int(2, 20, r), param: "discount_threshold" },
      discount: { desc: "the discount factor", gen: (r) => int(80, 97, r) / 100, param: "discount_factor" },
      digits: { desc: "the number of decimal places", gen: (r) => int(2, 4, r), param: "ndigits" },
    },
    render: (fn, v, c, x) => `from collections import defaultdict


def ${fn}(${v.orders}${x}):
    """Return per-customer totals with tax applied and large orders discounted.

    Cancelled orders are skipped; the result is sorted by customer id.
    """
    ${v.totals} = defaultdict(float)
    counts = defaultdict(int)
    for ${v.order} in ${v.orders}:
        if ${v.order}.get("status") == "cancelled":
            continue
        counts[${v.order}["customer_id"]] += 1
        ${v.amount} = sum(line["price"] * line["qty"] for line in ${v.order}["lines"])
        if ${v.amount} >= ${c.threshold}:
            ${v.amount} *= ${c.discount}
        ${v.totals}[${v.order}["customer_id"]] += ${v.amount} * (1 + ${c.tax})
    ${v.report} = []
    for ${v.key} in sorted(${v.totals}):
        ${v.report}.append({
            "customer_id": ${v.key},
            "orders": counts[${v.key}],
            "total": round(${v.totals}[${v.key}], ${c.digits}),
        })
    return ${v.report}
`,
  },
  {
    lang: "python",
    fns: ["find_anomalies", "detect_spikes", "flag_outliers", "scan_readings"],
    vars: { readings: ["readings", "samples", "series"], window: ["window", "recent", "buf"], flagged: ["flagged", "alerts", "hits"], idx: ["idx", "i", "pos"], value: ["value", "x", "reading"], mean: ["mean", "avg", "mu"], std: ["std", "sigma", "spread"] },
    consts: {
      size: { desc: "the window size", gen: (r) => int(5, 40, r), param: "window_size" },
      z: { desc: "the z-score limit", gen: (r) => int(20, 45, r) / 10, param: "z_limit" },
      floor: { desc: "the minimum standard deviation", gen: (r) => int(1, 9, r) / 1000, param: "min_std" },
    },
    render: (fn, v, c, x) => `import math
from collections import deque


def ${fn}(${v.readings}${x}):
    """Return (index, value) pairs for readings far outside the recent moving window.

    A reading is flagged when its z-score against the readings in the window exceeds
    the limit; flagged readings are not added to the window.
    """
    if not ${v.readings}:
        return []
    ${v.window} = deque(maxlen=${c.size})
    ${v.flagged} = []
    for ${v.idx}, ${v.value} in enumerate(${v.readings}):
        if len(${v.window}) == ${v.window}.maxlen:
            ${v.mean} = sum(${v.window}) / len(${v.window})
            var = sum((w - ${v.mean}) ** 2 for w in ${v.window}) / len(${v.window})
            ${v.std} = max(math.sqrt(var), ${c.floor})
            if abs(${v.value} - ${v.mean}) / ${v.std} > ${c.z}:
                ${v.flagged}.append((${v.idx}, ${v.value}))
                continue
        ${v.window}.append(${v.value})
    return ${v.flagged}
`,
  },
  {
    lang: "python",
    fns: ["count_log_levels", "tally_errors", "parse_log_summary", "log_histogram"],
    vars: { path: ["path", "log_path", "filename"], counts: ["counts", "levels", "tally"], messages: ["messages", "errors", "failures"], line: ["line", "entry", "raw"], match: ["match", "m", "hit"], fh: ["fh", "f", "stream"] },
    consts: {
      top: { desc: "the number of messages reported", gen: (r) => int(3, 15, r), param: "top_n" },
      width: { desc: "the message truncation width", gen: (r) => 10 * int(6, 20, r), param: "max_width" },
      skip: { desc: "the number of header lines skipped", gen: (r) => int(1, 4, r), param: "skip_lines" },
    },
    render: (fn, v, c, x) => `import re
from collections import Counter

LINE_RE = re.compile(r"^(\\S+) (\\S+) \\[(DEBUG|INFO|WARNING|ERROR)\\] (.*)$")


def ${fn}(${v.path}${x}):
    """Count log lines per level and return the most frequent error messages."""
    ${v.counts} = Counter()
    ${v.messages} = Counter()
    with open(${v.path}, encoding="utf-8") as ${v.fh}:
        for _ in range(${c.skip}):
            next(${v.fh}, None)
        for ${v.line} in ${v.fh}:
            ${v.match} = LINE_RE.match(${v.line}.rstrip())
            if not ${v.match}:
                continue
            ${v.counts}[${v.match}.group(3)] += 1
            if ${v.match}.group(3) == "ERROR":
                ${v.messages}[${v.match}.group(4)[:${c.width}]] += 1
    return dict(${v.counts}), ${v.messages}.most_common(${c.top})
`,
  },
];

const JS: CodeTemplate[] = [
  {
    lang: "javascript",
    fns: ["groupAndSummarize", "summarizeSales", "rollupByRegion", "aggregateOrders"],
    vars: { rows: ["rows", "records", "entries"], groups: ["groups", "buckets", "byRegion"], row: ["row", "rec", "entry"], key: ["key", "region", "groupKey"], bucket: ["bucket", "acc", "slot"], result: ["result", "summary", "out"] },
    consts: {
      min: { desc: "the minimum group size", gen: (r) => int(2, 12, r), param: "minCount" },
      scale: { desc: "the rounding scale", gen: (r) => pick([10, 100, 1000], r), param: "roundTo" },
      limit: { desc: "the maximum number of groups returned", gen: (r) => int(5, 50, r), param: "maxGroups" },
    },
    render: (fn, v, c, x) => `/**
 * Groups sales rows by region and returns the biggest groups with their totals and averages.
 */
function ${fn}(${v.rows}${x}) {
  const ${v.groups} = new Map();
  for (const ${v.row} of ${v.rows}) {
    if (${v.row}.refunded) continue;
    const ${v.key} = ${v.row}.region ?? "unknown";
    let ${v.bucket} = ${v.groups}.get(${v.key});
    if (!${v.bucket}) {
      ${v.bucket} = { region: ${v.key}, count: 0, total: 0 };
      ${v.groups}.set(${v.key}, ${v.bucket});
    }
    ${v.bucket}.count += 1;
    ${v.bucket}.total += ${v.row}.amount;
  }
  const ${v.result} = [...${v.groups}.values()]
    .filter((g) => g.count >= ${c.min})
    .map((g) => ({ ...g, average: Math.round((g.total / g.count) * ${c.scale}) / ${c.scale} }))
    .sort((a, b) => b.total - a.total);
  return ${v.result}.slice(0, ${c.limit});
}

module.exports = { ${fn} };
`,
  },
  {
    lang: "javascript",
    fns: ["fetchJson", "requestWithRetry", "loadResource", "getWithBackoff"],
    vars: { url: ["url", "endpoint", "href"], options: ["options", "init", "config"], attempt: ["attempt", "tryIndex", "round"], res: ["res", "response", "reply"], wait: ["wait", "delayMs", "pause"], lastError: ["lastError", "failure", "lastErr"] },
    consts: {
      retries: { desc: "the number of attempts", gen: (r) => int(3, 7, r), param: "maxAttempts" },
      base: { desc: "the base delay in milliseconds", gen: (r) => 50 * int(2, 10, r), param: "baseDelayMs" },
      timeout: { desc: "the request timeout in milliseconds", gen: (r) => 1000 * int(2, 15, r), param: "timeoutMs" },
    },
    render: (fn, v, c, x) => `const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function ${fn}(${v.url}, ${v.options} = {}${x}) {
  let ${v.lastError} = null;
  for (let ${v.attempt} = 0; ${v.attempt} < ${c.retries}; ${v.attempt}++) {
    try {
      const ${v.res} = await fetch(${v.url}, { ...${v.options}, signal: AbortSignal.timeout(${c.timeout}) });
      if (${v.res}.ok) return await ${v.res}.json();
      if (${v.res}.status < 500 && ${v.res}.status !== 429) {
        throw new Error("request failed with status " + ${v.res}.status);
      }
      ${v.lastError} = new Error("server responded " + ${v.res}.status);
    } catch (e) {
      if (e.name !== "TimeoutError" && e.name !== "TypeError") throw e;
      ${v.lastError} = e;
    }
    const ${v.wait} = ${c.base} * 2 ** ${v.attempt} + Math.floor(Math.random() * 100);
    await sleep(${v.wait});
  }
  throw ${v.lastError};
}
`,
  },
  {
    lang: "javascript",
    fns: ["parseCsv", "readTable", "csvToObjects", "loadCsvRows"],
    vars: { text: ["text", "source", "raw"], lines: ["lines", "rowsText", "chunks"], header: ["header", "columns", "fields"], records: ["records", "items", "parsed"], line: ["line", "rowText", "current"], cells: ["cells", "parts", "values"] },
    consts: {
      max: { desc: "the maximum number of rows", gen: (r) => 500 * int(1, 40, r), param: "maxRows" },
      min: { desc: "the minimum number of columns", gen: (r) => int(2, 6, r), param: "minColumns" },
    },
    render: (fn, v, c, x) => `/**
 * Parses simple comma-separated text (no quoted fields) into objects keyed by the header row.
 * Blank lines and lines starting with "#" are skipped.
 */
function ${fn}(${v.text}, separator = ","${x}) {
  const ${v.lines} = ${v.text}.split(/\\r?\\n/).filter((l) => l.trim() !== "" && !l.startsWith("#"));
  if (${v.lines}.length === 0) return [];
  const ${v.header} = ${v.lines}[0].split(separator).map((h) => h.trim());
  if (${v.header}.length < ${c.min}) {
    throw new Error("expected at least " + ${c.min} + " columns, got " + ${v.header}.length);
  }
  const ${v.records} = [];
  for (const ${v.line} of ${v.lines}.slice(1, ${c.max} + 1)) {
    const ${v.cells} = ${v.line}.split(separator);
    const record = {};
    ${v.header}.forEach((name, i) => {
      const cell = (${v.cells}[i] ?? "").trim();
      record[name] = cell !== "" && !Number.isNaN(Number(cell)) ? Number(cell) : cell;
    });
    ${v.records}.push(record);
  }
  return ${v.records};
}
`,
  },
  {
    lang: "javascript",
    fns: ["createRateLimiter", "makeThrottle", "tokenBucket", "buildLimiter"],
    vars: { tokens: ["tokens", "available", "budget"], last: ["last", "lastRefill", "stamp"], now: ["now", "current", "tick"], elapsed: ["elapsed", "delta", "gap"], queue: ["queue", "waiting", "pending"] },
    consts: {
      capacity: { desc: "the bucket capacity", gen: (r) => int(5, 120, r), param: "capacity" },
      rate: { desc: "the refill rate per second", gen: (r) => int(1, 40, r), param: "refillPerSecond" },
      poll: { desc: "the polling interval in milliseconds", gen: (r) => 5 * int(2, 40, r), param: "pollMs" },
    },
    render: (fn, v, c, x) => `/**
 * A token-bucket rate limiter: acquire() resolves once a token is available.
 */
function ${fn}(clock = Date.now${x}) {
  let ${v.tokens} = ${c.capacity};
  let ${v.last} = clock();
  const ${v.queue} = [];

  function refill() {
    const ${v.now} = clock();
    const ${v.elapsed} = (${v.now} - ${v.last}) / 1000;
    ${v.tokens} = Math.min(${c.capacity}, ${v.tokens} + ${v.elapsed} * ${c.rate});
    ${v.last} = ${v.now};
  }

  function drain() {
    refill();
    while (${v.queue}.length > 0 && ${v.tokens} >= 1) {
      ${v.tokens} -= 1;
      ${v.queue}.shift()();
    }
    if (${v.queue}.length > 0) setTimeout(drain, ${c.poll});
  }

  return {
    acquire() {
      return new Promise((resolve) => {
        ${v.queue}.push(resolve);
        if (${v.queue}.length === 1) drain();
      });
    },
  };
}
`,
  },
];

const CODE: CodeTemplate[] = [...PY, ...JS];

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function codeTask(r: Rand): EditTask {
  for (let tries = 0; tries < 64; tries++) {
    const t = pick(CODE, r);
    const fn = pick(t.fns, r);
    const names: Record<string, string> = {};
    for (const [slot, pool] of Object.entries(t.vars)) names[slot] = pick(pool, r);
    const values: Record<string, number> = {};
    for (const [k, spec] of Object.entries(t.consts)) values[k] = spec.gen(r);
    const lits = (vals: Record<string, number>) => Object.fromEntries(Object.entries(vals).map(([k, n]) => [k, String(n)]));
    const doc = t.render(fn, names, lits(values), "");
    const u = r();
    let instruction: string;
    let expected: string;
    if (u < 0.4) {
      const slot = pick(Object.keys(t.vars), r);
      const old = names[slot];
      const to = other(t.vars[slot], old, r);
      expected = t.render(fn, { ...names, [slot]: to }, lits(values), "");
      // only a clean rename: the old name is nothing but this variable, the new one is unused
      const re = (w: string) => new RegExp(`\\b${escapeRe(w)}\\b`, "g");
      if (re(to).test(doc) || doc.replace(re(old), to) !== expected) continue;
      instruction = `Rename the variable \`${old}\` to \`${to}\` everywhere in the snippet and output the whole snippet, otherwise unchanged.`;
    } else if (u < 0.7) {
      const k = pick(Object.keys(t.consts), r);
      let to = t.consts[k].gen(r);
      for (let j = 0; j < 8 && to === values[k]; j++) to = t.consts[k].gen(r);
      if (to === values[k]) continue;
      expected = t.render(fn, names, lits({ ...values, [k]: to }), "");
      instruction = `Change ${t.consts[k].desc} from ${values[k]} to ${to} and output the whole snippet, otherwise unchanged.`;
    } else {
      const k = pick(Object.keys(t.consts), r);
      const { param } = t.consts[k];
      if (new RegExp(`\\b${escapeRe(param)}\\b`).test(doc)) continue;
      const extra = t.lang === "python" ? `, ${param}=${values[k]}` : `, ${param} = ${values[k]}`;
      expected = t.render(fn, names, { ...lits(values), [k]: param }, extra);
      instruction =
        `Add a parameter \`${param}\` with default value ${values[k]} as the last parameter of \`${fn}\`, ` +
        `use it in place of the hard-coded ${values[k]} (${t.consts[k].desc}), and output the whole snippet, otherwise unchanged.`;
    }
    if (!fits(doc) || expected.length > EDIT_DOC_MAX_CHARS) continue;
    const lang = t.lang === "python" ? "Python" : "JavaScript";
    const prompt = `Here is a ${lang} snippet. ${instruction} Output only the edited code, with no explanation.\n\n\`\`\`${t.lang}\n${doc}\`\`\``;
    return { prompt, document: doc, expected, kind: t.lang };
  }
  throw new Error("edit generator: no code snippet within the length bounds"); // not reached in practice
}

// ---------------------------------------------------------------------------------------------

/** `count` edit tasks for `seed`: JSON records at even indices, code snippets at odd ones. */
export function editTasks(count: number, seed = 0): EditTask[] {
  const out: EditTask[] = [];
  for (let i = 0; i < count; i++) {
    const r = uniforms(seed, 0x6564, i);
    out.push(i % 2 === 0 ? jsonTask(r) : codeTask(r));
  }
  return out;
}

/** The prompts of `editTasks(count, seed)`. */
export function editPrompts(count: number, seed = 0): string[] {
  return editTasks(count, seed).map((t) => t.prompt);
}

/**
 * `count` prompts alternating GSM8K and edit, GSM8K first: ceil(count/2) GSM8K problems and
 * floor(count/2) edit prompts, each the prefix of its own set for `seed`.
 */
export function mixPrompts(count: number, seed = 0): string[] {
  const g = gsm8kPrompts(Math.ceil(count / 2), seed);
  const e = editPrompts(Math.floor(count / 2), seed);
  const out: string[] = [];
  for (let i = 0; i < g.length; i++) {
    out.push(g[i]);
    if (i < e.length) out.push(e[i]);
  }
  return out;
}
