/**
 * `serve --metrics-port`: the server's counters in the Prometheus text format, over HTTP.
 *
 * Counters and gauges are read from the service's `stats()` when Prometheus scrapes, so the two can
 * never disagree and the engine loop pays nothing for them; only the batch-size histogram needs each
 * engine step, which the core reports through `onEngineStep`.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RolloutCore } from "../rollout/core";
import type { RolloutService } from "./service";

type Stats = Record<string, unknown>;

export class MetricsServer {
  readonly registry = new Registry();
  private readonly http: http.Server;
  private snapshot: Stats = {};

  constructor(
    private readonly service: RolloutService,
    core: RolloutCore,
    maxBatch: number,
    drafterName?: string,
  ) {
    const r = this.registry;
    const stat = (key: string): number => {
      const v = this.snapshot[key];
      return typeof v === "number" ? v : 0;
    };
    const drafterStat = (key: string): number => {
      const d = this.snapshot.drafter as Stats | null | undefined;
      const v = d?.[key];
      return typeof v === "number" ? v : 0;
    };
    // a counter is set to the service's running total at each scrape (it only ever grows)
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [r],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(read());
        },
      });
    gauge("specactor_uptime_seconds", "Seconds since the server started.", () => stat("uptime_s"));
    for (const [key, help] of [
      ["requests_accepted", "Generate requests accepted."],
      ["requests_finished", "Requests whose every sample finished."],
      ["requests_aborted", "Requests that ended aborted (by abort, pause abort, or a lost client)."],
      ["requests_failed", "Requests that ended with an error."],
      ["generated_tokens", "Tokens emitted by the engine."],
      ["engine_steps", "Engine steps run."],
      ["seq_steps", "Sequence-steps: the sum over engine steps of the sequences in each."],
      ["clients_lost", "Clients dropped for silence or not reading."],
      ["bad_messages", "Malformed messages answered with an error."],
    ] as const) {
      counter(`specactor_${key}_total`, help, () => stat(key));
    }
    gauge("specactor_running_sequences", "Samples in the engine (batch occupancy).", () => stat("running"));
    gauge("specactor_queued_sequences", "Samples waiting for admission (queue depth).", () => stat("queued"));
    gauge("specactor_peak_batch", "The largest engine step so far, in sequences.", () => stat("peak_batch"));
    gauge("specactor_weight_version", "The weight version new samples run on.", () => stat("weight_version"));
    gauge("specactor_kv_bytes", "Bytes of KV cache memory the engine holds.", () => stat("kv_bytes"));
    gauge("specactor_memory_released", "1 while the engine's KV memory is released (release_memory), else 0.", () =>
      this.snapshot.memory === "released" ? 1 : 0,
    );
    gauge("specactor_clients", "Connected clients.", () => stat("clients"));
    if (drafterName !== undefined) {
      for (const [key, name, help] of [
        ["proposed_tokens", "specactor_drafter_proposed_tokens_total", "Draft tokens proposed for verification."],
        ["accepted_tokens", "specactor_drafter_accepted_tokens_total", "Draft tokens the verifier accepted."],
        ["verify_steps", "specactor_drafter_verify_steps_total", "Sequence-steps that carried a draft."],
        ["errors", "specactor_drafter_errors_total", "Draft proposals rejected (the drafter failed or broke the rules)."],
      ] as const) {
        new Counter({
          name,
          help,
          labelNames: ["drafter"],
          registers: [r],
          collect() {
            this.reset();
            this.inc({ drafter: drafterName }, drafterStat(key));
          },
        });
      }
    }
    const buckets: number[] = [];
    for (let b = 1; b < maxBatch; b *= 2) buckets.push(b);
    buckets.push(maxBatch);
    const batch = new Histogram({ name: "specactor_batch_size", help: "Sequences per engine step.", buckets, registers: [r] });
    core.onEngineStep = (size) => batch.observe(size);

    this.http = http.createServer((req, res) => {
      if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics is served here\n");
        return;
      }
      // one stats() snapshot per scrape: every metric of a scrape is of the same moment
      this.snapshot = this.service.stats();
      r.metrics().then(
        (text) => res.writeHead(200, { "content-type": r.contentType }).end(text),
        (e: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${e.message}\n`),
      );
    });
  }

  /** Binds `host:port` (0: a free port); resolves to the metrics URL. */
  listen(host: string, port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(port, host, () => {
        this.http.off("error", reject);
        const a = this.http.address() as AddressInfo;
        const shown = a.family === "IPv6" ? `[${a.address}]` : a.address;
        resolve(`http://${shown}:${a.port}/metrics`);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.http.closeAllConnections();
      this.http.close(() => resolve());
    });
  }
}
