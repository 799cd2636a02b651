import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { type GrpoBenchOptions, grpoPrompts, isEditPrompt, parseGrpoModes, runGrpoBench, timelines } from "../../src/bench/grpo";
import { editPrompts, mixPrompts } from "../../src/data/edit";
import { tinyDir } from "./helpers";

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function options(outDir: string, over: Partial<GrpoBenchOptions> = {}): GrpoBenchOptions {
  return {
    model: tinyDir(),
    prompts: "gsm8k:2",
    n: 2,
    maxTokens: 16,
    epochs: 2,
    // drift > 0 makes every mode pay a Python KL between epochs (seconds, outside the makespans): off here
    drift: 0,
    temperature: 1,
    topP: 1,
    topK: -1,
    seed: 1234,
    fresh: false,
    // the model drafter needs the model's drafter directory: left out of the tests
    modes: ["plain", "suffix", "specactor", "specactor:fixed"],
    drafters: ["suffix", "ngram"],
    outDir,
    ...over,
  };
}

test("bench-grpo on tiny: report, plots, exact against plain", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "specactor-grpo-"));
  try {
    const r = await runGrpoBench(options(dir));
    for (const f of ["report.json", "report.md"]) assert.ok(fs.existsSync(path.join(dir, f)), f);
    for (const f of ["batch-e0.png", "batch-e1.png", "throughput-e0.png", "makespan.png", "speedup.png", "accepted.png", "cost-model.png"]) {
      const buf = fs.readFileSync(path.join(dir, f));
      assert.ok(buf.subarray(0, 8).equals(PNG), `${f} is a PNG`);
    }
    const json = JSON.parse(fs.readFileSync(path.join(dir, "report.json"), "utf8"));
    assert.deepEqual(json.modes.map((m: { mode: string }) => m.mode), ["plain", "suffix", "specactor", "specactor:fixed"]);
    assert.equal(json.settings.max_batch, 4);
    assert.match(json.command, /--seed 1234/);
    for (const m of r.modes) {
      assert.equal(m.epochs.length, 2);
      assert.equal(m.total.exact_samples, m.total.samples, `${m.mode}: every sample exact`);
      assert.equal(m.total.samples, 8);
      assert.equal(typeof m.total.speedup, "number");
      assert.ok(Number.isFinite(m.total.speedup));
      for (const e of m.epochs) {
        assert.ok(Number.isFinite(e.speedup) && e.speedup > 0, `${m.mode} e${e.epoch} speed-up`);
        assert.equal(e.exact_samples, 4);
        assert.ok(e.timeline.batch.length > 2, "batch timeline");
        assert.ok(e.timeline.throughput.length > 0, "throughput timeline");
        assert.equal(e.timeline.batch[0][1], 4, "every sample admitted at once");
      }
    }
    assert.equal(r.modes[0].epochs[0].speedup, 1);
    assert.ok(r.modes[1].total.accepted_per_verify_step?.suffix !== undefined);
    const spec = r.modes.find((m) => m.mode === "specactor")!;
    assert.ok(spec.specactor);
    assert.equal(typeof spec.specactor.predicted_speedup, "number");
    assert.equal(typeof spec.specactor.measured_speedup, "number");
    assert.ok(spec.specactor.cost_samples.length > 0);
    assert.deepEqual(Object.keys(spec.total.accepted_per_verify_step!).sort(), ["all", "ngram", "suffix"]);
    assert.equal(r.modes.find((m) => m.mode === "specactor:fixed")!.specactor!.policy, "fixed");
    const md = fs.readFileSync(path.join(dir, "report.md"), "utf8");
    assert.match(md, /specactor bench-grpo --model .* --seed 1234/);
    assert.match(md, /\| specactor:fixed \| 1 \|/);
    assert.match(md, /!\[batch-e0\]\(batch-e0\.png\)/);
    assert.equal(r.copy_share, undefined, "gsm8k prompts: no copy share");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("bench-grpo: bad modes fail before any model work", async () => {
  const dir = path.join(os.tmpdir(), `specactor-grpo-never-${process.pid}`);
  const bad = (modes: string[], re: RegExp) => assert.rejects(runGrpoBench(options(dir, { model: "/nonexistent/model", modes })), re);
  await bad(["plain", "sufix"], /unknown mode 'sufix'/);
  await bad(["specactor[suffix+bogus]"], /unknown drafter 'bogus'/);
  await bad(["specactor:nope"], /unknown variant 'nope'/);
  await bad(["suffix", "suffix"], /named twice/);
  assert.ok(!fs.existsSync(dir));
  assert.throws(() => parseGrpoModes("specactor[]"), /name the drafters/);
  const modes = parseGrpoModes("specactor[suffix+ngram]:nomakespan,suffix");
  assert.equal(modes[0].label, "plain", "plain is added, first");
  assert.deepEqual(modes[1].drafters, ["suffix", "ngram"]);
  assert.equal(modes[1].makespan, false);
  assert.equal(modes[2].mode, "vanilla");
});

test("bench-grpo: --fresh needs a built-in set", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "specactor-grpo-fresh-"));
  try {
    const file = path.join(dir, "prompts.jsonl");
    fs.writeFileSync(file, JSON.stringify({ prompt_ids: [1, 2, 3] }) + "\n");
    await assert.rejects(runGrpoBench(options(path.join(dir, "out"), { model: "/nonexistent/model", prompts: file, fresh: true })), /--fresh needs a built-in prompt set/);
    const p = grpoPrompts("mix:4:7", 3, true);
    assert.deepEqual(p.specs, ["mix:4:7", "mix:4:1007", "mix:4:2007"]);
    assert.notDeepEqual(p.perEpoch[0], p.perEpoch[1]);
    assert.deepEqual(grpoPrompts("gsm8k:3", 2, false).specs, ["gsm8k:3", "gsm8k:3"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("bench-grpo: timelines from steps", () => {
  const t = timelines([[1000, 4, 4], [1100, 4, 8], [1200, 2, 2]], 0.3);
  assert.deepEqual(t.batch[0], [0, 4]);
  assert.deepEqual(t.batch[t.batch.length - 1], [0.3, 0]);
  assert.equal(t.throughput_bin_s, 0.015);
  assert.ok(Math.abs(t.throughput.reduce((a, [, v]) => a + v * t.throughput_bin_s, 0) - 14) < 0.01, "every token binned once");
  assert.deepEqual(timelines([], 1).batch, []);
});

test("bench-grpo: the edit prompts of a mix are its odd indices", () => {
  const mix = mixPrompts(5, 3);
  const edits = editPrompts(2, 3);
  const picked = mix.filter((_, j) => isEditPrompt("mix", j));
  assert.deepEqual(picked, edits);
  assert.ok(isEditPrompt("edit", 0) && !isEditPrompt("gsm8k", 1) && !isEditPrompt(undefined, 1));
});
