/**
 * Sampling and trie walks for a step's sequences, spread over the main thread and worker threads.
 *
 * After the forward pass onnxruntime's threads are idle, so the cores are free: the step's logits
 * rows are copied once into shared memory and each thread walks a share of the sequences (a walk is
 * sequential within a sequence, independent across them). Results do not depend on the split: each
 * sample is a pure function of (logits row, parameters, seed, position).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { Sampler, type SamplingParams } from "../sampling/sampler";
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
  stopIds?: readonly number[];
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
    job.stopIds,
  );
}

interface Pending {
  resolve: (w: Walk[]) => void;
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
      w.on("message", (m: { id: number; walks?: Walk[]; error?: string }) => {
        w.unref(); // an idle worker must not keep the process alive
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error !== undefined) p?.reject(new Error(`sampling worker: ${m.error}`));
        else p?.resolve(m.walks!);
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
    const shares = Math.min(this.workers.length + 1, jobs.length);
    if (shares <= 1) return jobs.map((j) => runWalkJob(j, logits, this.vocab, this.sampler, this.eosIds));
    const n = rows * this.vocab;
    if (this.shared.length < n) this.shared = new Float32Array(new SharedArrayBuffer(4 * n));
    this.shared.set(logits.subarray(0, n));
    const size = Math.ceil(jobs.length / shares);
    const remote = this.workers.slice(0, shares - 1).map((w, k) => {
      const id = this.nextId++;
      const chunk = jobs.slice((k + 1) * size, (k + 2) * size);
      return new Promise<Walk[]>((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        w.ref();
        w.postMessage({ id, buffer: this.shared.buffer, jobs: chunk });
      });
    });
    const local = jobs.slice(0, size).map((j) => runWalkJob(j, logits, this.vocab, this.sampler, this.eosIds));
    return local.concat(...(await Promise.all(remote)));
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
