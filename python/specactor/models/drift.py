"""Policy drift between RL epochs, emulated: ``python -m specactor.models.drift ...``

``make BASE OUT --scale S --epoch E``: OUT is BASE's model with every weight perturbed
deterministically, w' = w * (1 + S * eps) with eps ~ N(0, 1) drawn from a generator seeded by E,
written in the same prepared form (hf/, onnx/, and the drafters re-derived from the drifted
weights, as a self-drafter is refreshed after a weight update). Chaining
epochs (BASE = the previous epoch's directory) makes the drift cumulative, like training steps.

``kl A B --sequences FILE``: the mean per-token KL(p_A || p_B) of the next-token distributions over
the positions of the sequences in FILE (JSONL lines ``{"ids": [...], "start": k}``, positions from
``start`` on), printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch


def make(base: Path, out: Path, scale: float, epoch: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .prepare import log, write_drafter, write_form

    meta = json.loads((base / "onnx" / "model.json").read_text())
    manifest = json.loads((base / "manifest.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(base / "hf", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base / "hf")
    gen = torch.Generator().manual_seed(1_000_003 * (epoch + 1))
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.mul_(1 + scale * torch.randn(p.shape, generator=gen))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        name = f"{meta['name'].split('+')[0]}+drift{scale:g}e{epoch}"
        write_form(model, tok, tmp, name, meta["eos_ids"])
        for d in manifest.get("drafters", []):
            write_drafter(d, model, tok, tmp, meta["eos_ids"])
        manifest = {**manifest, "drift": {"base": str(base), "scale": scale, "epoch": epoch}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        log(f"drifted model (scale {scale:g}, epoch {epoch}) ready at {out}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def kl(a: Path, b: Path, sequences: Path, max_positions: int) -> dict:
    from transformers import AutoModelForCausalLM

    ma = AutoModelForCausalLM.from_pretrained(a / "hf", dtype=torch.float32).eval()
    mb = AutoModelForCausalLM.from_pretrained(b / "hf", dtype=torch.float32).eval()
    total, count = 0.0, 0
    for line in sequences.read_text().splitlines():
        if count >= max_positions:
            break
        row = json.loads(line)
        ids = torch.tensor([row["ids"]])
        with torch.no_grad():
            la = torch.log_softmax(ma(ids).logits[0, row["start"] - 1 : -1].double(), -1)
            lb = torch.log_softmax(mb(ids).logits[0, row["start"] - 1 : -1].double(), -1)
        per = (la.exp() * (la - lb)).sum(-1)
        total += float(per.sum())
        count += per.numel()
    return {"mean_kl": total / max(count, 1), "positions": count}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="policy drift between epochs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("base", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--scale", type=float, required=True)
    m.add_argument("--epoch", type=int, required=True)
    k = sub.add_parser("kl")
    k.add_argument("a", type=Path)
    k.add_argument("b", type=Path)
    k.add_argument("--sequences", type=Path, required=True)
    k.add_argument("--max-positions", type=int, default=4000)
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    if args.cmd == "make":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        make(args.base.resolve(), args.out.resolve(), args.scale, args.epoch)
    else:
        print(json.dumps(kl(args.a, args.b, args.sequences, args.max_positions)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
