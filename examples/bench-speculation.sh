#!/usr/bin/env bash
# The speculation benchmark (not a test): plain vs vanilla speculation with each drafter, side by
# side in one run per setting, on SmolLM2-135M-Instruct. Defaults follow the exact-speculation issue:
# 32 GSM8K-style prompts x n=4, 256 max tokens, 2 epochs with policy drift, each mode starting from
# an empty history store, at T=1.0/top-p 1.0 and T=0.7/top-p 0.95. Results go to out/bench-*.json.
#
#   examples/bench-speculation.sh                          # the full run at batch 1 (about 3 hours on 2 cores)
#   BATCH=1 PROMPTS=gsm8k:8 MODES=plain,suffix examples/bench-speculation.sh   # a quicker look
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
PROMPTS=${PROMPTS:-gsm8k:32}
N=${N:-4}
MAX_TOKENS=${MAX_TOKENS:-256}
BATCH=${BATCH:-1}
EPOCHS=${EPOCHS:-2}
DRIFT=${DRIFT:-0.01}
MODES=${MODES:-plain,ngram,suffix,model}
SETTINGS=${SETTINGS:-"1.0/1.0 0.7/0.95"}
for setting in $SETTINGS; do
  t=${setting%/*}; p=${setting#*/}
  echo "== T=$t top-p=$p batch<=$BATCH"
  node bin/specactor.js compare --model smollm2 --prompts "$PROMPTS" --n "$N" --max-tokens "$MAX_TOKENS" \
    --epochs "$EPOCHS" --drift "$DRIFT" --temperature "$t" --top-p "$p" --seed 7 --max-batch "$BATCH" \
    --modes "$MODES" --quiet --json "out/bench-t$t-p$p-b$BATCH.json"
done
