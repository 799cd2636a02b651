/**
 * The in-process engine: onnxruntime-node on the CPU, running the trie graph exported by
 * `python/specactor/models/onnx_graph.py` (past KV read-only in, new KV out, logits only for the
 * rows that can be sampled).
 *
 * The KV cache lives in buffers the engine owns (kv-slots.ts); a step hands onnxruntime views of
 * them, so nothing copies the whole cache in or out per step. Sampling and trie walks run after the
 * forward pass, spread over the cores onnxruntime has just released (sampling-pool.ts).
 */
import * as os from "node:os";
import * as path from "node:path";
import * as fs from "node:fs";
import * as ort from "onnxruntime-node";
import { type Engine, EngineError, type EngineInfo, type SeqResult, type SeqStep } from "./engine";
import { EMPTY_TRIE, trieDepths } from "./trie";
import { KvSlots } from "./kv-slots";
import { SamplingPool, type WalkJob } from "./sampling-pool";

export interface OnnxModelMeta {
  name: string;
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  vocab_size: number;
  max_context: number;
  eos_ids: number[];
  mask_value: number;
  num_parameters: number;
}

export class OnnxEngine implements Engine {
  readonly info: EngineInfo;
  private readonly kv: KvSlots;
  private readonly pool: SamplingPool;
  /** Called with the milliseconds each step spent sampling and walking tries (for benchmarks). */
  onSampleTime?: (ms: number) => void;
  /** Steps run one at a time; a step asked for while one runs waits its turn. */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly meta: OnnxModelMeta,
    threads: number,
  ) {
    this.info = {
      name: `onnx-cpu ${meta.name} (${meta.num_layers} layers, ${threads} threads)`,
      model: meta.name,
      vocabSize: meta.vocab_size,
      maxContext: meta.max_context,
      eosIds: meta.eos_ids,
    };
    this.kv = new KvSlots(meta.num_layers, meta.num_kv_heads, meta.head_dim);
    this.pool = new SamplingPool(meta.vocab_size, meta.eos_ids, threads);
  }

  /** Loads `<dir>/onnx/model.onnx` of a prepared model directory. */
  /**
   * `spinning` (default true): the pool threads spin between nodes. Off, they sleep instead: a little
   * slower on an idle machine, and much faster on a busy one, where a preempted spinning thread makes
   * its partners spin for nothing (measured in docs/VERL.md: beside an idle local Ray on 2 cores).
   */
  static async load(modelDir: string, opts: { threads?: number; spinning?: boolean } = {}): Promise<OnnxEngine> {
    const onnxDir = path.join(modelDir, "onnx");
    const metaPath = path.join(onnxDir, "model.json");
    if (!fs.existsSync(metaPath)) throw new EngineError(`not a prepared model directory (no ${metaPath})`);
    const meta = JSON.parse(fs.readFileSync(metaPath, "utf8")) as OnnxModelMeta;
    const threads = opts.threads ?? os.cpus().length;
    const session = await ort.InferenceSession.create(path.join(onnxDir, "model.onnx"), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
      // Pool threads spin between the ~1300 nodes of a step (a sleeping thread's wake-up costs more
      // than a small node: about 3 ms per step at batch 1), and stop spinning when the run ends, so
      // they do not hold the cores the sampler and the drafters need between runs.
      extra: { session: { intra_op: { allow_spinning: opts.spinning === false ? "0" : "1" }, force_spinning_stop: "1" } },
    });
    return new OnnxEngine(session, meta, threads);
  }

  cachedLength(seqId: number): number {
    return this.kv.length(seqId);
  }

  truncate(seqId: number, length: number): void {
    if (!this.kv.has(seqId)) throw new EngineError(`unknown sequence ${seqId}`);
    const current = this.kv.length(seqId);
    if (!Number.isInteger(length) || length < 0 || length > current) {
      throw new EngineError(`cannot truncate sequence ${seqId} of length ${current} to ${length}`);
    }
    this.kv.truncate(seqId, length);
  }

  release(seqId: number): void {
    this.kv.release(seqId);
  }

  sequences(): number[] {
    return this.kv.ids();
  }

  kvBytes(): number {
    return this.kv.bytes;
  }

  settledKvBytes(): Promise<number> {
    return this.tail.then(() => this.kv.bytes);
  }

  /**
   * The cache grows with the live sequences and already shrinks to nothing when the last one is
   * released; this drops the buffers and the slot table outright. Ordered after the steps before it.
   */
  releaseMemory(): Promise<number> {
    const run = this.tail.then(() => {
      if (this.kv.live > 0) throw new EngineError(`cannot release the KV cache while ${this.kv.live} sequence(s) hold it`);
      this.kv.clear();
      return this.kv.bytes;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Nothing to allocate ahead: the next step allocates what its sequences need. */
  restoreMemory(): Promise<number> {
    const run = this.tail.then(() => this.kv.bytes);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** For benchmarks: a sequence whose past is `length` positions of zeros, without a prefill. */
  fillSynthetic(seqId: number, length: number): void {
    this.kv.fillSynthetic(seqId, length);
  }

  async close(): Promise<void> {
    this.kv.clear();
    await this.pool.close();
    await this.session.release();
  }

  step(batch: SeqStep[]): Promise<SeqResult[]> {
    const run = this.tail.then(() => (batch.length === 0 ? [] : this.runStep(batch)));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private validate(s: SeqStep, depths: number[]): void {
    const V = this.meta.vocab_size;
    if (s.append.length < 1) throw new EngineError(`sequence ${s.seqId}: a step must append at least one token`);
    if (!Number.isInteger(s.maxEmit) || s.maxEmit < 1) throw new EngineError(`sequence ${s.seqId}: maxEmit must be >= 1`);
    const trie = s.trie ?? EMPTY_TRIE;
    for (const t of [...s.append, ...trie.tokens, ...(s.stopIds ?? [])]) {
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new EngineError(`sequence ${s.seqId}: token id ${t} is outside the vocabulary [0, ${V})`);
      }
    }
    const deepest = depths.reduce((a, b) => Math.max(a, b), 0);
    const end = this.kv.length(s.seqId) + s.append.length + deepest;
    if (end > this.meta.max_context) {
      throw new EngineError(
        `sequence ${s.seqId}: ${end} positions exceed the model context of ${this.meta.max_context}`,
      );
    }
  }

  private async runStep(request: SeqStep[]): Promise<SeqResult[]> {
    const { num_layers: L, num_kv_heads: KV, head_dim: D, mask_value: MASK } = this.meta;
    const seen = new Set<number>();
    for (const s of request) {
      if (seen.has(s.seqId)) throw new EngineError(`sequence ${s.seqId} appears twice in one step`);
      seen.add(s.seqId);
    }
    const requestDepths = request.map((s) => trieDepths(s.trie ?? EMPTY_TRIE));
    request.forEach((s, i) => this.validate(s, requestDepths[i]));

    // rows follow slot order, so a contiguous slot range is a zero-copy view of the cache
    const slotOf = request.map((s) => this.kv.slot(s.seqId));
    const order = request.map((_, i) => i).sort((a, b) => slotOf[a] - slotOf[b]);
    const batch = order.map((i) => request[i]);
    const depths = order.map((i) => requestDepths[i]);
    const tries = batch.map((s) => s.trie ?? EMPTY_TRIE);
    const B = batch.length;
    const cached = batch.map((s) => this.kv.length(s.seqId));
    const counts = batch.map((s, i) => s.append.length + tries[i].tokens.length);
    this.kv.fitContext(Math.max(...batch.map((s, i) => cached[i] + counts[i])));
    const past = this.kv.past(order.map((i) => slotOf[i]));
    const N = Math.max(...counts);
    const P = past.length;
    const T = P + N;

    const inputIds = new BigInt64Array(B * N);
    const positionIds = new BigInt64Array(B * N);
    // key-major mask [B, 1, T, N]: entry (t, j) lets new token j attend to position t
    const mask = new Float32Array(B * T * N).fill(MASK);
    const allow = (i: number, j: number, from: number, to: number) => {
      for (let t = from; t < to; t++) mask[(i * T + t) * N + j] = 0;
    };
    const rowOf: number[][] = []; // rowOf[i][node + 1] = logits row of entry i's node (-1 = root)
    const index: number[] = [];
    for (let i = 0; i < B; i++) {
      const s = batch[i];
      const A = s.append.length;
      const trie = tries[i];
      const base = i * N;
      for (let j = 0; j < A; j++) {
        inputIds[base + j] = BigInt(s.append[j]);
        positionIds[base + j] = BigInt(cached[i] + j);
        allow(i, j, 0, cached[i]);
        allow(i, j, P, P + j + 1);
      }
      for (let k = 0; k < trie.tokens.length; k++) {
        const j = A + k;
        inputIds[base + j] = BigInt(trie.tokens[k]);
        positionIds[base + j] = BigInt(cached[i] + A - 1 + depths[i][k]);
        allow(i, j, 0, cached[i]);
        allow(i, j, P, P + A);
        for (let n = k; n >= 0; n = trie.parents[n]) mask[(i * T + P + A + n) * N + j] = 0;
      }
      for (let j = counts[i]; j < N; j++) mask[(i * T + P + j) * N + j] = 0; // padding rows see themselves
      // only the root and the trie nodes can be sampled: the LM head runs on those rows alone
      const rows = [index.length];
      index.push(base + A - 1);
      for (let k = 0; k < trie.tokens.length; k++) {
        rows.push(index.length);
        index.push(base + A + k);
      }
      rowOf.push(rows);
    }

    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", inputIds, [B, N]),
      position_ids: new ort.Tensor("int64", positionIds, [B, N]),
      attn_mask: new ort.Tensor("float32", mask, [B, 1, T, N]),
      logits_index: new ort.Tensor("int64", BigInt64Array.from(index, BigInt), [index.length]),
    };
    for (let l = 0; l < L; l++) {
      feeds[`past_key.${l}`] = new ort.Tensor("float32", past.keys[l], [B, KV, P, D]);
      feeds[`past_value.${l}`] = new ort.Tensor("float32", past.values[l], [B, KV, D, P]);
    }
    const out = await this.session.run(feeds);
    const logits = out.logits.data as Float32Array;
    const newKeys = Array.from({ length: L }, (_, l) => out[`new_key.${l}`].data as Float32Array);
    const newValues = Array.from({ length: L }, (_, l) => out[`new_value.${l}`].data as Float32Array);

    const jobs: WalkJob[] = batch.map((s, i) => ({
      tokens: tries[i].tokens,
      parents: tries[i].parents,
      depths: depths[i],
      rows: rowOf[i],
      // the row of the last appended token (absolute position cached + A - 1) samples the next one
      rootPosition: cached[i] + s.append.length,
      params: s.params,
      seed: s.seed,
      maxEmit: s.maxEmit,
      stopIds: s.stopIds,
    }));
    const t0 = performance.now();
    const walks = await this.pool.run(jobs, logits, index.length);
    this.onSampleTime?.(performance.now() - t0);
    const results: SeqResult[] = new Array(B);
    for (let i = 0; i < B; i++) {
      const s = batch[i];
      const A = s.append.length;
      const walk = walks[i];
      // keep the KV of the appended tokens and of the accepted path only
      const keep = [...Array(A).keys(), ...walk.acceptedNodes.map((n) => A + n)];
      this.kv.append(s.seqId, i, N, keep, newKeys, newValues);
      results[order[i]] = { seqId: s.seqId, tokens: walk.tokens, logprobs: walk.logprobs, accepted: walk.acceptedNodes.length };
    }
    return results;
  }
}
