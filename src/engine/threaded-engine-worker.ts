/** The engine thread of threaded-engine.ts: an OnnxEngine serving the main thread's messages in order. */
import { parentPort, workerData } from "node:worker_threads";
import type { SeqStep } from "./engine";
import { OnnxEngine } from "./onnx-engine";

type Message =
  | { type: "step"; id: number; batch: SeqStep[] }
  | { type: "truncate"; id: number; seqId: number; length: number }
  | { type: "release"; id: number; seqId: number }
  | { type: "kv_bytes"; id: number }
  | { type: "release_memory"; id: number }
  | { type: "restore_memory"; id: number }
  | { type: "close"; id: number };

const { modelDir, threads, spinning } = workerData as { modelDir: string; threads?: number; spinning?: boolean };
const port = parentPort!;
let tail: Promise<unknown> = Promise.resolve();

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

OnnxEngine.load(modelDir, { threads, spinning }).then(
  (engine) => {
    port.postMessage({ id: 0, info: engine.info });
    port.on("message", (m: Message) => {
      // in arrival order: a truncate or release sent after a step applies after it
      tail = tail.then(async () => {
        try {
          switch (m.type) {
            // every reply, and an unsolicited one after a release, carries the cache's size
            case "step":
              return port.postMessage({ id: m.id, results: await engine.step(m.batch), kvBytes: engine.kvBytes() });
            case "truncate":
              return engine.truncate(m.seqId, m.length);
            case "release":
              engine.release(m.seqId);
              return port.postMessage({ id: 0, kvBytes: engine.kvBytes() });
            case "kv_bytes":
              return port.postMessage({ id: m.id, kvBytes: engine.kvBytes() });
            case "release_memory":
              return port.postMessage({ id: m.id, kvBytes: await engine.releaseMemory() });
            case "restore_memory":
              return port.postMessage({ id: m.id, kvBytes: await engine.restoreMemory() });
            case "close":
              await engine.close();
              return port.postMessage({ id: m.id });
          }
        } catch (e) {
          if (m.id !== 0) port.postMessage({ id: m.id, error: errorText(e) });
        }
      });
    });
  },
  (e) => port.postMessage({ id: 0, error: errorText(e) }),
);
