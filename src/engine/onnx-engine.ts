/**
 * The in-process engine: onnxruntime-node on the CPU, running the trie graph exported by
 * `python/specactor/models/onnx_graph.py` (past KV read-only in, new KV out, logits only for the
 * rows that can be sampled).
 *
 * KV layout (private to this file): per sequence and layer, keys and values as [KV, capacity, D],
 * grown by doubling. Each step copies the batch's pasts into [B, KV, P, D] inputs, padded to the
 * longest and masked; that copy is the cost the engine-speed work removes.
 */
import * as os from "node:os";
import * as path from "node:path";
import * as fs from "node:fs";
import * as ort from "onnxruntime-node";
import { Sampler } from "../sampling/sampler";
import { type Engine, EngineError, type EngineInfo, type SeqResult, type SeqStep } from "./engine";
import { EMPTY_TRIE, trieDepths } from "./trie";
import { walkTrie } from "./walk";

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

class SeqKV {
  length = 0;
  capacity: number;
  keys: Float32Array[];
  values: Float32Array[];

  constructor(private readonly layers: number, private readonly rowWidth: number, capacity = 64) {
    this.capacity = capacity;
    this.keys = Array.from({ length: layers }, () => new Float32Array(rowWidth * capacity));
    this.values = Array.from({ length: layers }, () => new Float32Array(rowWidth * capacity));
  }

  reserve(length: number, kvHeads: number, headDim: number): void {
    if (length <= this.capacity) return;
    let cap = this.capacity;
    while (cap < length) cap *= 2;
    const grow = (old: Float32Array): Float32Array => {
      const next = new Float32Array(kvHeads * cap * headDim);
      for (let h = 0; h < kvHeads; h++) {
        next.set(
          old.subarray(h * this.capacity * headDim, (h * this.capacity + this.length) * headDim),
          h * cap * headDim,
        );
      }
      return next;
    };
    this.keys = this.keys.map(grow);
    this.values = this.values.map(grow);
    this.capacity = cap;
  }
}

export class OnnxEngine implements Engine {
  readonly info: EngineInfo;
  private readonly seqs = new Map<number, SeqKV>();
  private readonly sampler: Sampler;
  /** Steps run one at a time; a step asked for while one runs waits its turn. */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly meta: OnnxModelMeta,
  ) {
    this.info = {
      name: `onnx-cpu ${meta.name} (${meta.num_layers} layers, ${os.cpus().length} threads)`,
      model: meta.name,
      vocabSize: meta.vocab_size,
      maxContext: meta.max_context,
      eosIds: meta.eos_ids,
    };
    this.sampler = new Sampler(meta.vocab_size);
  }

  /** Loads `<dir>/onnx/model.onnx` of a prepared model directory. */
  static async load(modelDir: string, opts: { threads?: number } = {}): Promise<OnnxEngine> {
    const onnxDir = path.join(modelDir, "onnx");
    const metaPath = path.join(onnxDir, "model.json");
    if (!fs.existsSync(metaPath)) throw new EngineError(`not a prepared model directory (no ${metaPath})`);
    const meta = JSON.parse(fs.readFileSync(metaPath, "utf8")) as OnnxModelMeta;
    const session = await ort.InferenceSession.create(path.join(onnxDir, "model.onnx"), {
      intraOpNumThreads: opts.threads ?? os.cpus().length,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
    });
    return new OnnxEngine(session, meta);
  }

  cachedLength(seqId: number): number {
    return this.seqs.get(seqId)?.length ?? 0;
  }

  truncate(seqId: number, length: number): void {
    const kv = this.seqs.get(seqId);
    if (!kv) throw new EngineError(`unknown sequence ${seqId}`);
    if (!Number.isInteger(length) || length < 0 || length > kv.length) {
      throw new EngineError(`cannot truncate sequence ${seqId} of length ${kv.length} to ${length}`);
    }
    kv.length = length;
  }

  release(seqId: number): void {
    this.seqs.delete(seqId);
  }

  async close(): Promise<void> {
    this.seqs.clear();
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
    for (const t of [...s.append, ...trie.tokens]) {
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new EngineError(`sequence ${s.seqId}: token id ${t} is outside the vocabulary [0, ${V})`);
      }
    }
    const deepest = depths.reduce((a, b) => Math.max(a, b), 0);
    const end = this.cachedLength(s.seqId) + s.append.length + deepest;
    if (end > this.meta.max_context) {
      throw new EngineError(
        `sequence ${s.seqId}: ${end} positions exceed the model context of ${this.meta.max_context}`,
      );
    }
  }

  private async runStep(batch: SeqStep[]): Promise<SeqResult[]> {
    const { num_layers: L, num_kv_heads: KV, head_dim: D, vocab_size: V, mask_value: MASK } = this.meta;
    const tries = batch.map((s) => s.trie ?? EMPTY_TRIE);
    const depths = tries.map(trieDepths);
    batch.forEach((s, i) => this.validate(s, depths[i]));
    const ids = new Set<number>();
    for (const s of batch) {
      if (ids.has(s.seqId)) throw new EngineError(`sequence ${s.seqId} appears twice in one step`);
      ids.add(s.seqId);
    }
    const B = batch.length;
    const cached = batch.map((s) => this.cachedLength(s.seqId));
    const counts = batch.map((s, i) => s.append.length + tries[i].tokens.length);
    const N = Math.max(...counts);
    const P = Math.max(...cached);
    const T = P + N;

    const inputIds = new BigInt64Array(B * N);
    const positionIds = new BigInt64Array(B * N);
    const mask = new Float32Array(B * N * T).fill(MASK);
    const rowOf: number[][] = []; // rowOf[i][node + 1] = logits row of seq i's node (-1 = root)
    const index: number[] = [];
    for (let i = 0; i < B; i++) {
      const s = batch[i];
      const A = s.append.length;
      const trie = tries[i];
      const base = i * N;
      const maskRow = (j: number) => (base + j) * T;
      for (let j = 0; j < A; j++) {
        inputIds[base + j] = BigInt(s.append[j]);
        positionIds[base + j] = BigInt(cached[i] + j);
        const r = maskRow(j);
        mask.fill(0, r, r + cached[i]);
        mask.fill(0, r + P, r + P + j + 1);
      }
      for (let k = 0; k < trie.tokens.length; k++) {
        const j = A + k;
        inputIds[base + j] = BigInt(trie.tokens[k]);
        positionIds[base + j] = BigInt(cached[i] + A - 1 + depths[i][k]);
        const r = maskRow(j);
        mask.fill(0, r, r + cached[i]);
        mask.fill(0, r + P, r + P + A);
        for (let n = k; n >= 0; n = trie.parents[n]) mask[r + P + A + n] = 0;
      }
      for (let j = counts[i]; j < N; j++) mask[maskRow(j) + P + j] = 0; // padding rows see themselves
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
      attn_mask: new ort.Tensor("float32", mask, [B, 1, N, T]),
      logits_index: new ort.Tensor("int64", BigInt64Array.from(index, BigInt), [index.length]),
    };
    for (let l = 0; l < L; l++) {
      const k = new Float32Array(B * KV * P * D);
      const v = new Float32Array(B * KV * P * D);
      for (let i = 0; i < B; i++) {
        const kv = this.seqs.get(batch[i].seqId);
        if (!kv || kv.length === 0) continue;
        for (let h = 0; h < KV; h++) {
          const src = h * kv.capacity * D;
          const dst = (i * KV + h) * P * D;
          k.set(kv.keys[l].subarray(src, src + kv.length * D), dst);
          v.set(kv.values[l].subarray(src, src + kv.length * D), dst);
        }
      }
      feeds[`past_key.${l}`] = new ort.Tensor("float32", k, [B, KV, P, D]);
      feeds[`past_value.${l}`] = new ort.Tensor("float32", v, [B, KV, P, D]);
    }
    const out = await this.session.run(feeds);
    const logits = out.logits.data as Float32Array;

    const results: SeqResult[] = [];
    for (let i = 0; i < B; i++) {
      const s = batch[i];
      const A = s.append.length;
      const walk = walkTrie(
        tries[i],
        (node) => {
          const r = rowOf[i][node + 1];
          // the row of a token at absolute position q samples position q + 1
          const q = node < 0 ? cached[i] + A - 1 : cached[i] + A - 1 + depths[i][node];
          return this.sampler.sample(logits.subarray(r * V, (r + 1) * V), s.params, s.seed, q + 1);
        },
        this.info.eosIds,
        s.maxEmit,
      );
      // keep the KV of the appended tokens and of the accepted path only
      const keepRows = [...Array(A).keys(), ...walk.acceptedNodes.map((n) => A + n)];
      this.commit(s.seqId, i, N, keepRows, out);
      results.push({ seqId: s.seqId, tokens: walk.tokens, logprobs: walk.logprobs, accepted: walk.acceptedNodes.length });
    }
    return results;
  }

  private commit(seqId: number, i: number, N: number, rows: number[], out: ort.InferenceSession.OnnxValueMapType): void {
    const { num_layers: L, num_kv_heads: KV, head_dim: D } = this.meta;
    let kv = this.seqs.get(seqId);
    if (!kv) {
      kv = new SeqKV(L, KV * D);
      this.seqs.set(seqId, kv);
    }
    kv.reserve(kv.length + rows.length, KV, D);
    for (let l = 0; l < L; l++) {
      const nk = out[`new_key.${l}`].data as Float32Array;
      const nv = out[`new_value.${l}`].data as Float32Array;
      for (let h = 0; h < KV; h++) {
        for (let r = 0; r < rows.length; r++) {
          const src = ((i * KV + h) * N + rows[r]) * D;
          const dst = (h * kv.capacity + kv.length + r) * D;
          kv.keys[l].set(nk.subarray(src, src + D), dst);
          kv.values[l].set(nv.subarray(src, src + D), dst);
        }
      }
    }
    kv.length += rows.length;
  }
}
