/**
 * The rollout service on the real in-process engine thread (what `serve` runs), without sockets:
 * memory release and restore, generation across them, and clearing sequences nobody holds.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { Body } from "../../src/bridge/wire";
import { ThreadedEngine } from "../../src/engine/threaded-engine";
import { RolloutCore } from "../../src/rollout/core";
import { RolloutService } from "../../src/server/service";
import { tinyDir } from "./helpers";

interface Sent {
  type: string;
  body: Body;
  arrays?: Record<string, ArrayLike<number>>;
}

let engine: ThreadedEngine;
let service: RolloutService;
const inbox: Sent[] = [];
let waiters: (() => void)[] = [];

before(async () => {
  engine = await ThreadedEngine.load(tinyDir(), { threads: 1 });
  const core = new RolloutCore(engine, 8);
  service = new RolloutService(
    core,
    engine,
    (_client, type, body, arrays) => {
      inbox.push({ type, body, arrays });
      for (const w of waiters.splice(0)) w();
    },
    { heartbeatIntervalS: 1, clientTimeoutS: 10, maxMessageBytes: 1 << 20, server: "test" },
  );
});
after(async () => engine.close());

/** Takes the oldest message of `type` (or an error answering `type`) out of the inbox, waiting for one if need be. */
async function next(type: string, errorOf?: string): Promise<Sent> {
  for (;;) {
    const i = inbox.findIndex((m) => m.type === type || (errorOf !== undefined && m.type === "error" && m.body.type === errorOf));
    if (i >= 0) return inbox.splice(i, 1)[0];
    await new Promise<void>((resolve) => waiters.push(resolve));
  }
}

function call(type: string, body: Body = {}): Promise<Sent> {
  const reply = { pause: "paused", resume: "resumed", release_memory: "memory_released", restore_memory: "memory_restored", clear_kv: "kv_cleared", stats: "stats", health: "health" }[type]!;
  service.handle("c", { type, body });
  return next(reply, type);
}

const PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301]];
let nextId = 0;

/** Sends a generate; `onOutputs` runs at each outputs message (mid-run); resolves to every sample's tokens. */
function generate(onOutputs?: () => void): { id: string; done: Promise<number[][]> } {
  const id = `r${nextId++}`;
  const lengths = PROMPTS.map((p) => p.length);
  service.handle("c", { type: "generate", body: { id, prompt_lengths: lengths, prompt_ids: Int32Array.from(PROMPTS.flat()), n: 2, max_tokens: 60, seed: 5, stream: true } });
  const done = (async () => {
    const tokens = new Map<string, number[]>();
    let finished = 0;
    while (finished < 4) {
      const m = await next("outputs");
      onOutputs?.();
      let at = 0;
      for (const e of m.body.outputs as Body[]) {
        const key = `${e.prompt as number}/${e.sample as number}`;
        const ids = Array.from(m.arrays!.token_ids).slice(at, at + (e.num_tokens as number));
        at += e.num_tokens as number;
        tokens.set(key, [...(tokens.get(key) ?? []), ...ids]);
        if (e.finished) finished++;
      }
    }
    return [...tokens.keys()].sort().map((k) => tokens.get(k)!);
  })();
  return { id, done };
}

test("release_memory frees the engine's KV cache, restore_memory gives it back, and generation is unchanged", async () => {
  let during = 0;
  const first = await generate(() => (during = Math.max(during, service.stats().kv_bytes as number))).done;
  assert.ok(during > 0, "the cache holds the running sequences");
  assert.ok(first.every((t) => t.length > 0));

  const refused = await call("release_memory");
  assert.equal(refused.type, "error");
  assert.equal(refused.body.code, "not_paused");

  // paused but still draining: not yet
  let pausing: Promise<Sent> | undefined;
  let early: Promise<Sent> | undefined;
  const draining = generate(() => {
    pausing ??= call("pause");
    early ??= call("release_memory");
  });
  assert.deepEqual(await draining.done, first);
  assert.equal((await early!).body.code, "not_paused");
  assert.equal((await pausing!).type, "paused");

  const released = await call("release_memory");
  assert.equal(released.type, "memory_released");
  assert.equal(released.body.kv_bytes, 0);
  assert.equal((await call("health")).body.memory, "released");
  assert.equal(service.stats().kv_bytes, 0);

  const restored = await call("restore_memory");
  assert.equal(restored.type, "memory_restored");
  assert.equal(service.health().memory, "held");
  await call("resume");
  let again = 0;
  assert.deepEqual(await generate(() => (again = Math.max(again, service.stats().kv_bytes as number))).done, first);
  assert.equal(again, during, "the same sequences take the same cache again");
});

test("a generate while the memory is released waits, and the first step after resume restores it", async () => {
  const base = await generate().done;
  await call("pause");
  assert.equal((await call("release_memory")).body.kv_bytes, 0);
  const queued = generate();
  await next("accepted");
  assert.equal(service.health().queued, 4);
  await call("resume"); // no restore_memory: the core restores before its next engine step
  assert.deepEqual(await queued.done, base);
  assert.equal(service.health().memory, "held");
});

test("clear_kv releases the engine state of sequences no request holds", async () => {
  // a sequence the core never started: engine state nobody would release
  await engine.step([{ seqId: 123456, append: [1, 2, 3], params: { temperature: 1, topP: 1, topK: -1 }, seed: 1, maxEmit: 1 }]);
  assert.deepEqual(engine.sequences(), [123456]);
  assert.equal((await call("clear_kv")).body.sequences, 1);
  assert.deepEqual(engine.sequences(), []);
  assert.equal((await call("clear_kv")).body.sequences, 0);
  // requests that run are left alone
  let cleared = -1;
  const running = generate(() => {
    if (cleared < 0) {
      service.handle("c", { type: "clear_kv", body: {} });
      const i = inbox.findIndex((m) => m.type === "kv_cleared");
      cleared = inbox.splice(i, 1)[0].body.sequences as number;
    }
  });
  assert.ok((await running.done).every((t) => t.length > 0));
  assert.equal(cleared, 0);
});
