import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { gsm8kPrompts } from "../../src/data/gsm8k";
import { EDIT_DOC_MAX_CHARS, EDIT_DOC_MIN_CHARS, approxTokens, editPrompts, editTasks, mixPrompts } from "../../src/data/edit";
import { copiedShare } from "../../src/data/copy-share";
import { BUILTIN_PROMPT_SETS, InputError, builtinPrompts, readPrompts } from "../../src/rollout/prompts";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The paths of leaves (and of shape changes) where two JSON values differ. */
function diffPaths(a: Json, b: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  const isObj = (x: Json) => x !== null && typeof x === "object";
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) out.push(at);
    else a.forEach((x, i) => diffPaths(x, b[i], [...at, i], out));
  } else if (isObj(a) && isObj(b) && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a as object);
    const kb = Object.keys(b as object);
    if (ka.join("\0") !== kb.join("\0")) out.push(at);
    else for (const k of ka) diffPaths((a as any)[k], (b as any)[k], [...at, k], out);
  } else if (a !== b) {
    out.push(at);
  }
  return out;
}

const SEEDS = [0, 1, 42, 2 ** 40 + 3];

test("edit prompts are deterministic, prefix-stable and depend on the seed", () => {
  assert.deepEqual(editPrompts(24, 7), editPrompts(24, 7));
  assert.deepEqual(editTasks(24, 7), editTasks(24, 7));
  assert.deepEqual(editPrompts(9, 7), editPrompts(24, 7).slice(0, 9));
  const a = editPrompts(24, 7);
  const b = editPrompts(24, 8);
  assert.notDeepEqual(a, b);
  assert.ok(a.filter((p, i) => p !== b[i]).length >= 20, "most prompts change with the seed");
  assert.ok(new Set(a).size === a.length, "no repeated prompt within a set");
});

test("edit counts, JSON/code alternation, and both languages", () => {
  assert.deepEqual(editPrompts(0, 1), []);
  for (const n of [1, 2, 7, 40]) assert.equal(editPrompts(n, 3).length, n);
  const tasks = editTasks(60, 3);
  tasks.forEach((t, i) => assert.equal(t.kind === "json", i % 2 === 0, `task ${i} is ${t.kind}`));
  const kinds = new Set(tasks.map((t) => t.kind));
  assert.ok(kinds.has("python") && kinds.has("javascript"), [...kinds].join(","));
});

test("edit documents are within the character bounds, and each prompt holds its document and asks for only the edit", () => {
  for (const seed of SEEDS) {
    for (const t of editTasks(80, seed)) {
      for (const doc of [t.document, t.expected]) {
        assert.ok(doc.length >= EDIT_DOC_MIN_CHARS && doc.length <= EDIT_DOC_MAX_CHARS, `length ${doc.length}`);
      }
      const est = approxTokens(t.document);
      assert.ok(est >= 200 && est <= 430, `approxTokens ${est}`);
      assert.ok(t.prompt.includes(t.document), "the document appears verbatim in the prompt");
      assert.match(t.prompt, /Output only the edited (JSON|code), with no explanation\./);
      assert.notEqual(t.expected, t.document);
    }
  }
});

test("JSON edits parse and change exactly the stated field to the stated value", () => {
  for (const seed of SEEDS) {
    for (const t of editTasks(80, seed).filter((x) => x.kind === "json")) {
      const before = JSON.parse(t.document) as Json;
      const after = JSON.parse(t.expected) as Json;
      assert.ok(t.path && t.path.length > 0 && t.value !== undefined);
      assert.deepEqual(diffPaths(before, after), [t.path], t.prompt);
      let node: any = after;
      for (const k of t.path) node = node[k];
      assert.deepEqual(node, t.value);
      // the instruction names the field (by key, or by path when the key repeats) and the value
      const key = String(t.path[t.path.length - 1]);
      const m = /Change the value of "([^"]+)" to (.+?) and output the whole record/.exec(t.prompt);
      assert.ok(m, t.prompt.slice(0, 200));
      assert.ok(m[1] === key || m[1].endsWith(`.${key}`) || m[1] === t.path.join("."), m[1]);
      assert.equal(m[2], JSON.stringify(t.value));
      // same formatting: only the edited line differs
      const [da, db] = [t.document.split("\n"), t.expected.split("\n")];
      assert.equal(da.length, db.length);
      assert.equal(da.filter((l, i) => l !== db[i]).length, 1);
    }
  }
});

test("code edits: renames are whole-word renames, constants and new parameters change the code", () => {
  const seen = new Set<string>();
  for (const seed of SEEDS) {
    for (const t of editTasks(80, seed).filter((x) => x.kind !== "json")) {
      assert.ok(t.prompt.includes("```" + t.kind + "\n"), "code is fenced with its language");
      const rename = /Rename the variable `(\w+)` to `(\w+)`/.exec(t.prompt);
      const constant = /Change (.+?) from ([\d.]+) to ([\d.]+) and output/.exec(t.prompt);
      const param = /Add a parameter `(\w+)` with default value ([\d.]+) as the last parameter of `(\w+)`/.exec(t.prompt);
      assert.equal([rename, constant, param].filter(Boolean).length, 1, t.prompt.slice(0, 200));
      if (rename) {
        seen.add("rename");
        const [, from, to] = rename;
        assert.ok(!new RegExp(`\\b${to}\\b`).test(t.document));
        assert.equal(t.document.replace(new RegExp(`\\b${from}\\b`, "g"), to), t.expected);
      } else if (constant) {
        seen.add("constant");
        assert.notEqual(constant[2], constant[3]);
        const changed = t.expected.split("\n").filter((l, i) => l !== t.document.split("\n")[i]);
        assert.ok(changed.length >= 1 && changed.every((l) => l.includes(constant[3])), changed.join("\n"));
      } else if (param) {
        seen.add("param");
        const [, name, value, fn] = param;
        assert.ok(!new RegExp(`\\b${name}\\b`).test(t.document));
        const sig = t.expected.split("\n").find((l) => l.includes(`${fn}(`) && /^(async )?(def|function) /.test(l));
        assert.ok(sig && new RegExp(`, ${name} ?= ?${value.replace(".", "\\.")}\\)`).test(sig), sig);
        assert.ok(t.expected.split(new RegExp(`\\b${name}\\b`)).length >= 3, "the parameter is used in the body");
      }
    }
  }
  assert.deepEqual([...seen].sort(), ["constant", "param", "rename"]);
});

test("mix interleaves gsm8k and edit, gsm8k first, with the extra one gsm8k", () => {
  const m = mixPrompts(10, 3);
  assert.equal(m.length, 10);
  assert.deepEqual(m.filter((_, i) => i % 2 === 0), gsm8kPrompts(5, 3));
  assert.deepEqual(m.filter((_, i) => i % 2 === 1), editPrompts(5, 3));
  const odd = mixPrompts(7, 3);
  assert.equal(odd.length, 7);
  assert.deepEqual(odd.filter((_, i) => i % 2 === 0), gsm8kPrompts(4, 3));
  assert.deepEqual(odd.filter((_, i) => i % 2 === 1), editPrompts(3, 3));
  assert.deepEqual(mixPrompts(1, 3), gsm8kPrompts(1, 3));
  assert.deepEqual(mixPrompts(0, 3), []);
  assert.deepEqual(mixPrompts(10, 3), m);
  assert.notDeepEqual(mixPrompts(10, 4), m);
});

test("readPrompts accepts gsm8k:, edit: and mix: specs; other specs are files", () => {
  const texts = (spec: string) => readPrompts(spec).map((p) => ("text" in p ? p.text : assert.fail("expected text")));
  assert.deepEqual(texts("edit:6"), editPrompts(6, 0));
  assert.deepEqual(texts("edit:4:9"), editPrompts(4, 9));
  assert.deepEqual(texts("mix:5:2"), mixPrompts(5, 2));
  assert.deepEqual(texts("gsm8k:3:1"), gsm8kPrompts(3, 1));
  assert.throws(() => readPrompts("foo:3"), (e: unknown) => e instanceof InputError && /cannot read prompts file foo:3/.test(e.message));
  assert.throws(() => readPrompts("edit:x"), (e: unknown) => e instanceof InputError && /cannot read prompts file edit:x/.test(e.message));
  assert.deepEqual(BUILTIN_PROMPT_SETS.map((s) => s.name), ["gsm8k", "edit", "mix"]);
  for (const s of BUILTIN_PROMPT_SETS) {
    assert.ok(s.summary.length > 0 && !s.summary.includes("\n"));
    assert.deepEqual(texts(s.spec.replace("N[:SEED]", "4:5")), builtinPrompts(s.name, 4, 5));
  }
});

test("the prompts command prints the chosen set as JSONL and rejects unknown sets", () => {
  const cli = path.join(__dirname, "..", "..", "src", "cli", "main.js");
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, "prompts", ...args], { encoding: "utf8" });
  const out = run("--set", "edit", "--count", "3", "--seed", "5");
  assert.equal(out.status, 0, out.stderr);
  assert.deepEqual(out.stdout.trim().split("\n").map((l) => JSON.parse(l).prompt), editPrompts(3, 5));
  const def = run("--count", "2");
  assert.deepEqual(def.stdout.trim().split("\n").map((l) => JSON.parse(l).prompt), gsm8kPrompts(2, 0));
  const bad = run("--set", "foo");
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown prompt set 'foo'/);
  assert.match(run("--help").stdout, /--set gsm8k\|edit\|mix/);
});

test("copiedShare counts response tokens inside n-token windows found in the prompt", () => {
  const prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(copiedShare(prompt, [3, 4, 5, 6, 7]), 1); // all copied
  assert.equal(copiedShare(prompt, prompt), 1);
  assert.equal(copiedShare(prompt, [20, 21, 22, 23, 24, 25]), 0); // none
  assert.equal(copiedShare(prompt, [1, 2, 3, 4, 90, 91, 92, 93]), 0.5); // partial
  // overlapping windows count each token once: [2..5] and [3..6] match, 40 and 41 do not
  assert.equal(copiedShare(prompt, [2, 3, 4, 5, 6, 40, 41]), 5 / 7);
  // a window must be contiguous in the prompt: 1,2 then 5,6 is not a 4-gram of it
  assert.equal(copiedShare(prompt, [1, 2, 5, 6]), 0);
  // runs shorter than n are not copies
  assert.equal(copiedShare(prompt, [1, 2, 3, 50, 4, 5, 6]), 0);
  // a response shorter than n has no window; an empty one has share 0
  assert.equal(copiedShare(prompt, [1, 2, 3]), 0);
  assert.equal(copiedShare(prompt, [1, 2, 3], 3), 1);
  assert.equal(copiedShare(prompt, []), 0);
  assert.equal(copiedShare([1, 2], [1, 2, 3, 4]), 0); // prompt shorter than n
  assert.equal(copiedShare(prompt, [1, 99, 2, 98], 1), 0.5);
  assert.throws(() => copiedShare(prompt, prompt, 0), RangeError);
  // ids are compared as numbers, not digit strings: [1, 23] is not [12, 3]
  assert.equal(copiedShare([1, 23, 4, 5], [12, 3, 4, 5], 4), 0);
});

test("an edit task's expected response is mostly copied from its prompt", () => {
  const chars = (s: string) => Array.from(s, (c) => c.codePointAt(0)!);
  for (const t of editTasks(20, 11)) {
    const share = copiedShare(chars(t.prompt), chars(t.expected), 16);
    assert.ok(share > 0.9 && share <= 1, `${t.kind}: ${share}`);
  }
});
