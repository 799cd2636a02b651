#!/usr/bin/env bash
# The same veRL GRPO config twice, rollout.name=vllm then rollout.name=specactor, and the rollout's
# figures side by side: timing_s/gen (seconds per step spent generating), throughput (tokens/s) and
# speculation's acceptance, averaged over the steps each run logged. For a GPU cluster with vLLM
# installed; every argument is passed to both runs (e.g. trainer.total_training_steps=20).
#
#   bash examples/verl/compare.sh trainer.total_training_steps=20
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/specactor-compare}
mkdir -p "$out"
for backend in vllm specactor; do
    echo "== rollout.name=$backend (log: $out/$backend.log)"
    ROLLOUT=$backend bash "$here/run_qwen2_5_0_5b_gsm8k_grpo.sh" "$@" 2>&1 | tee "$out/$backend.log" >/dev/null
done
python3 - "$out/vllm.log" "$out/specactor.log" <<'PY'
import re, statistics, sys
KEYS = ("timing_s/gen", "perf/throughput", "rollout/spec_accept_rate", "rollout/spec_accept_length")
def figures(path):
    seen = {k: [] for k in KEYS}
    for line in open(path, errors="replace"):
        for k in KEYS:
            for m in re.finditer(re.escape(k) + r"[:=]\s*([-+0-9.eE]+)", line):
                seen[k].append(float(m.group(1)))
    return {k: (statistics.mean(v) if v else None) for k, v in seen.items()}
a, b = figures(sys.argv[1]), figures(sys.argv[2])
fmt = lambda x: "-" if x is None else f"{x:.4g}"
print(f"{'metric':<30}{'vllm':>12}{'specactor':>12}")
for k in KEYS:
    print(f"{k:<30}{fmt(a[k]):>12}{fmt(b[k]):>12}")
if a["timing_s/gen"] and b["timing_s/gen"]:
    print(f"rollout speed-up (vllm gen time / specactor gen time): {a['timing_s/gen'] / b['timing_s/gen']:.2f}x")
PY
