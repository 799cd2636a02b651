/**
 * `specactor bench-engine`: the ONNX engine's step cost against the memory bound and against
 * transformers' static-cache decoding on the same weights, measured side by side in one run.
 *
 *     bound_ms = (weight bytes + KV bytes read) / read bandwidth
 *     weight bytes = 4 * parameters (every weight is read once per step; the tied embedding once,
 *                    as the LM head), KV bytes = 4 * batch * context * layers * 2 * kv_heads * head_dim
 *
 * The read bandwidth is measured by the same command: onnxruntime reducing a 1 GiB buffer.
 * Pasts are synthetic (zeros) so no configuration needs a prefill; every step runs the real graph and
 * samples at temperature 1 (the RL setting) with the seeded sampler, whose share is reported.
 * `nodes` is the trie size per sequence: 0 is a decode step, otherwise a verify step carrying a chain
 * of `nodes` random draft tokens per sequence. Both engines report the median of their timed steps:
 * on a shared machine one step slowed by a neighbour should not move the figure.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { OnnxEngine } from "../engine/onnx-engine";
import type { SeqStep } from "../engine/engine";
import { pythonBin, pythonEnv } from "../paths";

export interface BenchRow {
  engine: string;
  batch: number;
  context: number;
  nodes: number;
  ms: number;
  bound_ms?: number;
  sample_ms?: number;
}

export interface BenchOptions {
  batches: number[];
  contexts: number[];
  nodes: number[];
  steps: number;
  transformers: boolean;
  threads: number;
  log: (line: string) => void;
}

export async function measureBandwidth(threads: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "specactor-membw-"));
  const graph = path.join(dir, "membw.onnx");
  runPython(["-m", "specactor.bench.membw", graph]);
  const session = await ort.InferenceSession.create(graph, { intraOpNumThreads: threads });
  const n = 256 * 1024 * 1024;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i += 4096) x[i] = i; // touch every page before timing
  const feeds = { x: new ort.Tensor("float32", x, [n]) };
  await session.run(feeds);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    await session.run(feeds);
    best = Math.min(best, performance.now() - t);
  }
  await session.release();
  fs.rmSync(dir, { recursive: true, force: true });
  return (n * 4) / (best / 1000); // bytes per second
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function runPython(args: string[]): string {
  const r = spawnSync(pythonBin(), args, {
    encoding: "utf8",
    env: pythonEnv(),
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`python ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

export async function benchEngine(modelDir: string, opts: BenchOptions): Promise<{ rows: BenchRow[]; bandwidth: number }> {
  const bandwidth = await measureBandwidth(opts.threads);
  opts.log(`read bandwidth (onnxruntime, ${opts.threads} threads): ${(bandwidth / 1e9).toFixed(1)} GB/s`);
  const engine = await OnnxEngine.load(modelDir, { threads: opts.threads });
  const m = engine.meta;
  const weightBytes = 4 * m.num_parameters;
  const kvBytesPerToken = 4 * m.num_layers * 2 * m.num_kv_heads * m.head_dim;
  const rows: BenchRow[] = [];
  let seq = 0;
  const params = { temperature: 1, topP: 1, topK: -1 };
  let sampleMs = 0;
  engine.onSampleTime = (ms) => (sampleMs += ms);
  for (const batch of opts.batches) {
    for (const context of opts.contexts) {
      for (const nodes of opts.nodes) {
        const ids = Array.from({ length: batch }, () => seq++);
        ids.forEach((id) => engine.fillSynthetic(id, context));
        let rng = 12345 + batch * 7 + context;
        const rand = () => (rng = (rng * 1103515245 + 12345) % 2147483648) % m.vocab_size;
        const step = () =>
          engine.step(
            ids.map((id): SeqStep => ({
              seqId: id,
              append: [rand()],
              trie: nodes > 0 ? { tokens: Array.from({ length: nodes }, rand), parents: Array.from({ length: nodes }, (_, i) => i - 1) } : undefined,
              params,
              seed: id,
              maxEmit: nodes + 1,
            })),
          );
        await step(); // warm-up: shapes, allocations
        ids.forEach((id) => engine.truncate(id, context));
        sampleMs = 0;
        const times: number[] = [];
        for (let s = 0; s < opts.steps; s++) {
          const t = performance.now();
          await step();
          times.push(performance.now() - t);
          ids.forEach((id) => engine.truncate(id, context)); // every step sees the same context
        }
        const ms = median(times);
        const bound = ((weightBytes + kvBytesPerToken * batch * context) / bandwidth) * 1000;
        const row: BenchRow = { engine: "onnx", batch, context, nodes, ms: round(ms), bound_ms: round(bound), sample_ms: round(sampleMs / opts.steps) };
        rows.push(row);
        opts.log(
          `onnx  batch ${String(batch).padStart(3)}  context ${String(context).padStart(5)}  nodes ${nodes}  ` +
            `${row.ms.toFixed(1).padStart(8)} ms  (sampling ${row.sample_ms!.toFixed(1)} ms)  bound ${row.bound_ms!.toFixed(1)} ms  ratio ${(ms / bound).toFixed(2)}`,
        );
        ids.forEach((id) => engine.release(id));
      }
    }
  }
  await engine.close();
  if (opts.transformers) {
    const hfBatches = opts.batches.filter((b) => [1, 16, 64].includes(b));
    const out = runPython([
      "-m", "specactor.bench.hf_decode", path.join(modelDir, "hf"),
      "--batches", hfBatches.join(","), "--contexts", opts.contexts.join(","), "--threads", String(opts.threads),
      "--steps", String(opts.steps),
    ]);
    for (const line of out.split("\n").filter((l) => l.startsWith("{"))) {
      const r = JSON.parse(line) as BenchRow;
      rows.push(r);
      const ours = rows.find((o) => o.engine === "onnx" && o.batch === r.batch && o.context === r.context && o.nodes === 0);
      opts.log(
        `transformers-static  batch ${String(r.batch).padStart(3)}  context ${String(r.context).padStart(5)}  ${r.ms.toFixed(1).padStart(8)} ms` +
          (ours ? `  (onnx is ${(r.ms / ours.ms).toFixed(2)}x faster)` : ""),
      );
    }
  }
  return { rows, bandwidth };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
