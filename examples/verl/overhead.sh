#!/usr/bin/env bash
# The veRL path's cost on this machine: the same prompts, seeds and batch through veRL's agent loop
# (python -m specactor.verl.check) and through `specactor rollout`, alternating, RUNS times each;
# prints each run's rollout seconds and the median ratio veRL / CLI. Generation time only: the
# check command's rollout_s is veRL's generate_sequences, the CLI's is its summary's wall_s.
#
#   bash examples/verl/overhead.sh [MODEL] [PROMPTS] [N] [LENGTH] [RUNS]     (defaults: smollm2 gsm8k:16 4 256 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-smollm2}; PROMPTS=${2:-gsm8k:16}; N=${3:-4}; LEN=${4:-256}; RUNS=${5:-3}
PY=${PY:-.venv/bin/python}
out=$(mktemp -d)
if [[ $PROMPTS == gsm8k:* ]]; then
    node bin/specactor.js prompts --count "${PROMPTS#gsm8k:}" > "$out/prompts.jsonl"
    PROMPTS=$out/prompts.jsonl
fi
batch=$(( $(grep -c . "$PROMPTS") * N ))
for i in $(seq 1 "$RUNS"); do
    "$PY" -m specactor.verl.check --model "$MODEL" --prompts "$PROMPTS" --n "$N" --response-length "$LEN" \
        --seed 7 --max-batch "$batch" --json "$out/verl-$i.json" 2>/dev/null
    node bin/specactor.js rollout --model "$MODEL" --prompts "$PROMPTS" --n "$N" --max-tokens "$LEN" \
        --seed 7 --max-batch "$batch" --out "$out/cli-$i.jsonl" --summary-json "$out/cli-$i.summary.json" --quiet
done
"$PY" - "$out" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
verl = [json.load(open(f"{out}/verl-{i}.json")) for i in range(1, runs + 1)]
cli = [json.load(open(f"{out}/cli-{i}.summary.json")) for i in range(1, runs + 1)]
rows = [json.loads(l) for l in open(f"{out}/cli-1.jsonl")]
same = [s["token_ids"] for s in verl[0]["samples"]] == [r["token_ids"] for r in rows]
ratios = []
for i, (v, c) in enumerate(zip(verl, cli), 1):
    ratios.append(v["rollout_s"] / c["wall_s"])
    tokens = sum(len(s["token_ids"]) for s in v["samples"])
    print(f"run {i}: veRL agent loop {v['rollout_s']:.2f} s, specactor rollout {c['wall_s']:.2f} s "
          f"({tokens} tokens), ratio {ratios[-1]:.3f}")
print(f"median ratio veRL / CLI: {statistics.median(ratios):.3f}; token-identical to the CLI: {same}")
PY
