#!/usr/bin/env bash
# `make demo`: SmolLM2-135M-Instruct answering generated GSM8K-style problems through our own
# in-process ONNX engine, plain, vanilla speculation with each of two drafters, and SpecActor's
# scheduling (--mode specactor: every drafter merged per request under the cost-model policy) side by
# side: two RL-style epochs (the second on a slightly drifted policy), the speed-up per epoch, and the
# check that speculation returned exactly plain's tokens. Outputs land in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
CLI="node bin/specactor.js"
echo "== SmolLM2-135M-Instruct: 3 GSM8K-style prompts x 4 samples (a GRPO group each), 96 max tokens,"
echo "   T=0.7 top-p=0.95, 2 epochs with policy drift; plain, vanilla speculation with the suffix"
echo "   (history) drafter and with the model drafter (the policy's 8-bit copy), and specactor"
echo "   (suffix, n-gram and model drafters merged, the cost-model policy deciding every step)"
$CLI compare --model smollm2 --prompts gsm8k:3 --n 4 --max-tokens 96 --epochs 2 --drift 0.01 \
  --temperature 0.7 --top-p 0.95 --seed 2026 --max-batch 1 --modes plain,suffix,model,specactor --json out/demo.compare.json
echo
echo "== one sample, decoded (out/demo.jsonl):"
$CLI rollout --model smollm2 --prompts gsm8k:1 --n 1 --max-tokens 96 --temperature 0.7 --top-p 0.95 \
  --seed 2026 --mode vanilla --drafter suffix --out out/demo.jsonl --quiet 2>/dev/null
node -e '
const fs = require("fs");
const [first] = fs.readFileSync("out/demo.jsonl", "utf8").trim().split("\n").map(JSON.parse);
console.log(first.text.trim().slice(0, 600));
console.log(`\n(${first.token_ids.length} tokens, finish_reason=${first.finish_reason}, seed=${first.seed})`);
'
