"""Cross-engine exactness on a real model: the same rollout through the in-process ONNX engine
(`specactor rollout`) and through Python torch workers (`specactor serve --engine workers`), with
the divergence rate: first mismatches per generated token. Both engines run the same graph and the
same seeded rule, so only floating-point differences between onnxruntime and torch kernels can
flip a near-tie. Run: `python -m specactor.bench.cross_engine`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specactor.bench.bridge import CLI, ROOT, cli, in_process, prompt_ids
from specactor.client import RolloutClient


def through_workers(model_dir: Path, prompts: list[list[int]], args) -> tuple[float, list[list[int]]]:
    cmd = [*CLI, "serve", "--model", str(model_dir), "--address", "tcp://127.0.0.1:*", "--engine", "workers"]
    cmd += ["--workers", "1", "--max-batch", str(args.max_batch), "--worker-max-context", "1024"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = proc.stdout.readline().split("ready on ", 1)[1].split()[0]
        with RolloutClient(address, timeout_s=600) as client:
            t0 = time.perf_counter()
            results = client.generate(
                prompts, n=args.n, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
            )
            wall = time.perf_counter() - t0
            client.shutdown(drain=False)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return wall, [r.token_ids for per in results for r in per]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--max-batch", type=int, default=16)
    args = ap.parse_args(argv)
    model_dir = Path(cli("prepare-model", args.model).strip().splitlines()[-1])
    prompts = prompt_ids(model_dir, args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_wall, _, onnx_tokens = in_process(model_dir, prompts, args.max_batch, args, Path(tmp))
    torch_wall, torch_tokens = through_workers(model_dir, prompts, args)
    tokens = sum(len(t) for t in onnx_tokens)
    exact = sum(a == b for a, b in zip(onnx_tokens, torch_tokens, strict=True))
    divergences = sum(a != b for a, b in zip(onnx_tokens, torch_tokens, strict=True))
    row = {
        "model": args.model,
        "samples": len(onnx_tokens),
        "tokens": tokens,
        "exact_samples": exact,
        "divergences": divergences,
        "divergence_rate_per_token": divergences / max(1, tokens),
        "onnx_s": round(onnx_wall, 2),
        "torch_workers_s": round(torch_wall, 2),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
