#!/usr/bin/env bash
# `make demo`: SmolLM2-135M-Instruct answering generated GSM8K-style problems through our own
# in-process ONNX engine, with the seeded exact sampler. Outputs land in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
CLI="node bin/specactor.js"
echo "== plain rollout: SmolLM2-135M-Instruct, 16 GSM8K-style prompts x 2 samples, 128 max tokens"
$CLI rollout --model smollm2 --prompts gsm8k:16 --n 2 --max-tokens 128 \
  --temperature 0.7 --top-p 0.95 --seed 2026 --max-batch 16 \
  --out out/demo.jsonl --summary-json out/demo.summary.json
echo
echo "== first sample (out/demo.jsonl):"
node -e '
const fs = require("fs");
const [first] = fs.readFileSync("out/demo.jsonl", "utf8").trim().split("\n").map(JSON.parse);
console.log(first.text.trim().slice(0, 600));
console.log(`\n(${first.token_ids.length} tokens, finish_reason=${first.finish_reason}, seed=${first.seed})`);
'
