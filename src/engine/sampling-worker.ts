/** A sampling worker thread: walks the tries of the jobs it is sent (see sampling-pool.ts). */
import { parentPort, workerData } from "node:worker_threads";
import { Sampler } from "../sampling/sampler";
import { runWalkJob, type WalkJob } from "./sampling-pool";

const { vocab, eosIds } = workerData as { vocab: number; eosIds: number[] };
const sampler = new Sampler(vocab);

parentPort!.on("message", (m: { id: number; buffer: SharedArrayBuffer; jobs: WalkJob[] }) => {
  try {
    const logits = new Float32Array(m.buffer);
    parentPort!.postMessage({ id: m.id, walks: m.jobs.map((j) => runWalkJob(j, logits, vocab, sampler, eosIds)) });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
