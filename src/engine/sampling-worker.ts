/** A sampling worker thread: walks the tries, or samples the rows, it is sent (see sampling-pool.ts). */
import { parentPort, workerData } from "node:worker_threads";
import { Sampler } from "../sampling/sampler";
import { runWalkJob, sampleRow, type RowJob, type WalkJob } from "./sampling-pool";

const { vocab, eosIds } = workerData as { vocab: number; eosIds: number[] };
const sampler = new Sampler(vocab);

parentPort!.on("message", (m: { id: number; buffer: SharedArrayBuffer; jobs?: WalkJob[]; rows?: RowJob[] }) => {
  try {
    const logits = new Float32Array(m.buffer);
    if (m.rows) parentPort!.postMessage({ id: m.id, samples: m.rows.map((r) => sampleRow(r, logits, vocab, sampler)) });
    else parentPort!.postMessage({ id: m.id, walks: m.jobs!.map((j) => runWalkJob(j, logits, vocab, sampler, eosIds)) });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
