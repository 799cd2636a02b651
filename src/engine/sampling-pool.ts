/**
 * Sampling and trie walks for a step's sequences, spread over the main thread and worker threads.
 *
 * After the forward pass onnxruntime's threads are idle, so the cores are free: the step's logits
 * rows are copied once into shared memory and each thread walks a share of the sequences (a walk is
 * sequential within a sequence, independent across them). Results do not depend on the split: each
 * sample is a pure function of (logits row, parameters, seed, position).
 *
 * With fewer sequences than threads (batch 1) and chains to verify (a model drafter's drafts), the
 * threads instead share the rows: every row of a chain is on the walk's path until its first
 * rejection, so each thread samples a share of them ahead and the walk reads the samples. A general
 * trie is walked as before, since most of its rows are never visited.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { Sampler, type Sample, type SamplingParams } from "../sampling/sampler";
import { walkTrie, type Walk } from "./walk";

export interface WalkJob {
  tokens: number[];
  parents: number[];
  depths: number[];
  /** rows[node + 1]: the logits row of the root (node -1) and of each trie node. */
  rows: number[];
  /** Absolute position the root's row samples; a node at depth d samples rootPosition + d. */
  rootPosition: number;
  params: SamplingParams;
  seed: number;
  maxEmit: number;
}

export function runWalkJob(job: WalkJob, logits: Float32Array, vocab: number, sampler: Sampler, eosIds: readonly number[]): Walk {
  return walkTrie(
    { tokens: job.tokens, parents: job.parents },
    (node) => {
      const r = job.rows[node + 1];
      const position = job.rootPosition + (node < 0 ? 0 : job.depths[node]);
      return sampler.sample(logits.subarray(r * vocab, (r + 1) * vocab), job.params, job.seed, position);
    },
    eosIds,
    job.maxEmit,
  );
}

/** One row to sample ahead of a walk. */
export interface RowJob {
  row: number;
  position: number;
  params: SamplingParams;
  seed: number;
}

export function sampleRow(job: RowJob, logits: Float32Array, vocab: number, sampler: Sampler): Sample {
  return sampler.sample(logits.subarray(job.row * vocab, (job.row + 1) * vocab), job.params, job.seed, job.position);
}

function isChain(job: WalkJob): boolean {
  return job.parents.every((p, k) => p === k - 1);
}

interface Pending {
  resolve: (w: Walk[] | Sample[]) => void;
  reject: (e: Error) => void;
}

export class SamplingPool {
  private readonly sampler: Sampler;
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private shared = new Float32Array(new SharedArrayBuffer(4));
  private failure?: Error;

  constructor(private readonly vocab: number, private readonly eosIds: readonly number[], threads: number) {
    this.sampler = new Sampler(vocab);
    const script = path.join(__dirname, "sampling-worker.js");
    if (!fs.existsSync(script)) return; // running from sources (ts-node): sample on the main thread
    for (let i = 0; i < threads - 1; i++) {
      const w = new Worker(script, { workerData: { vocab, eosIds } });
      w.on("message", (m: { id: number; walks?: Walk[]; samples?: Sample[]; error?: string }) => {
        w.unref(); // an idle worker must not keep the process alive
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error !== undefined) p?.reject(new Error(`sampling worker: ${m.error}`));
        else p?.resolve(m.walks ?? m.samples!);
      });
      w.on("error", (e) => this.fail(e));
      w.on("exit", (code) => code !== 0 && this.fail(new Error(`sampling worker exited with code ${code}`)));
      w.unref();
      this.workers.push(w);
    }
  }

  get threads(): number {
    return this.workers.length + 1;
  }

  async run(jobs: WalkJob[], logits: Float32Array, rows: number): Promise<Walk[]> {
    if (this.failure) throw this.failure;
    if (jobs.length < this.threads && jobs.some((j) => j.tokens.length > 0) && jobs.every(isChain)) {
      return this.runRowsAhead(jobs, logits, rows);
    }
    const shares = Math.min(this.workers.length + 1, jobs.length);
    if (shares <= 1) return jobs.map((j) => runWalkJob(j, logits, this.vocab, this.sampler, this.eosIds));
    const shared = this.share(logits, rows);
    const size = Math.ceil(jobs.length / shares);
    const remote = this.workers
      .slice(0, shares - 1)
      .map((w, k) => this.send<Walk[]>(w, { buffer: shared, jobs: jobs.slice((k + 1) * size, (k + 2) * size) }));
    const local = jobs.slice(0, size).map((j) => runWalkJob(j, logits, this.vocab, this.sampler, this.eosIds));
    return local.concat(...(await Promise.all(remote)));
  }

  /** Samples every row of the chains, spread over the threads, then walks them with those samples. */
  private async runRowsAhead(jobs: WalkJob[], logits: Float32Array, rows: number): Promise<Walk[]> {
    const ahead: RowJob[] = [];
    for (const j of jobs) {
      for (let node = -1; node < j.tokens.length; node++) {
        const position = j.rootPosition + (node < 0 ? 0 : j.depths[node]);
        ahead.push({ row: j.rows[node + 1], position, params: j.params, seed: j.seed });
      }
    }
    const shared = this.share(logits, rows);
    const size = Math.ceil(ahead.length / this.threads);
    // the main thread takes the shallowest rows: the walk needs them first and surely
    const remote = this.workers.map((w, k) => this.send<Sample[]>(w, { buffer: shared, rows: ahead.slice((k + 1) * size, (k + 2) * size) }));
    const samples = ahead.slice(0, size).map((r) => sampleRow(r, logits, this.vocab, this.sampler));
    samples.push(...(await Promise.all(remote)).flat());
    let first = 0;
    return jobs.map((j) => {
      const base = first;
      first += j.tokens.length + 1;
      return walkTrie({ tokens: j.tokens, parents: j.parents }, (node) => samples[base + node + 1], this.eosIds, j.maxEmit);
    });
  }

  /** The step's logits rows in memory the workers can read. */
  private share(logits: Float32Array, rows: number): SharedArrayBuffer {
    const n = rows * this.vocab;
    if (this.shared.length < n) this.shared = new Float32Array(new SharedArrayBuffer(4 * n));
    this.shared.set(logits.subarray(0, n));
    return this.shared.buffer as SharedArrayBuffer;
  }

  private send<T extends Walk[] | Sample[]>(w: Worker, message: { buffer: SharedArrayBuffer; jobs?: WalkJob[]; rows?: RowJob[] }): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: Walk[] | Sample[]) => void, reject });
      w.ref();
      w.postMessage({ id, ...message });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }

  private fail(e: Error): void {
    this.failure = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
