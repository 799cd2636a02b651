"""``python -m specactor.bench.hf_decode HF_DIR --batches 1,16,64 --contexts 64,512 --threads T --steps S``

transformers' own decoding with a static cache on the same weights, for the engine benchmark: per
(batch, context), the median time of S decode steps (forward of one token per sequence over a static
cache sized to the context, then sampling from the softmax). Prints one JSON object per line.

The cache is not filled by a prefill (that would cost minutes at batch 64): a static cache attends
over its whole length every step, so a step at cache position ``context`` costs what a real one does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, StaticCache


def step_ms(model, batch: int, context: int, steps: int = 5, warmup: int = 1) -> float:
    cache = StaticCache(config=model.config, max_cache_len=context + warmup + steps + 1)
    ids = torch.full((batch, 1), 5, dtype=torch.long)
    times = []
    with torch.inference_mode():
        for s in range(warmup + steps):
            pos = context + s
            t = time.perf_counter()
            out = model(
                input_ids=ids,
                position_ids=torch.full((batch, 1), pos, dtype=torch.long),
                cache_position=torch.tensor([pos]),
                past_key_values=cache,
                use_cache=True,
            )
            ids = torch.multinomial(torch.softmax(out.logits[:, -1, :].float(), dim=-1), 1)
            if s >= warmup:
                times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--contexts", default="64,512,1024,2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32).eval()
    for b in map(int, args.batches.split(",")):
        for c in map(int, args.contexts.split(",")):
            print(
                json.dumps(
                    {
                        "engine": "transformers-static",
                        "batch": b,
                        "context": c,
                        "nodes": 0,
                        "ms": round(step_ms(model, b, c, steps=args.steps), 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
