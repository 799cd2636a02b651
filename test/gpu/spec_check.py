"""GPU check of the Python torch engine: plain vs vanilla speculation, verify-step cost, exactness.

Runs where only Python, torch and transformers exist (no Node, pyzmq or veRL) and only small files
arrive: it builds a random-weight llama of realistic size on the spot, scales the residual outputs of
its later layers by ``--later-scale`` so that a drafter made of its first ``--draft-layers`` layers
agrees with it at a tunable rate (a smaller scale: later layers matter less: more agreement), and
drives ``specactor.worker.engine.TorchEngine`` directly:

1. plain decoding of ``--batch`` sequences x ``--tokens`` tokens (tokens/s);
2. vanilla speculation: the drafter proposes ``--draft-len`` greedy tokens per sequence as a chain,
   the target verifies them in one pass (tokens/s, acceptance), and every token must equal plain's;
3. verify-step cost against batch size and trie size (nodes per sequence) at a fixed context.

    python test/gpu/spec_check.py                      # cuda if available, a ~1B model
    python test/gpu/spec_check.py --size small --device cpu --tokens 24   # a quick CPU run

Copy ``python/specactor/`` (or install the package) next to it; the script puts ``../../python`` on
the path itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

from specactor.sampling import SamplingParams  # noqa: E402
from specactor.worker.engine import SeqStep, TorchEngine  # noqa: E402

SIZES = {
    # name: (hidden, layers, heads, kv heads, intermediate, vocab)
    "small": (256, 8, 8, 2, 704, 4096),
    "1b": (2048, 16, 32, 8, 8192, 32000),
    "3b": (3072, 28, 24, 8, 8192, 32000),
}


def build(
    size: str, later_scale: float, head_scale: float, draft_layers: int, context: int, out: Path
) -> tuple[Path, Path]:
    """Writes a random target and its truncated drafter as prepared-looking directories."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter, vocab = SIZES[size]
    cfg = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=context,
        tie_word_embeddings=False,  # tied, a scaled head would scale the embeddings too
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)  # peaked distributions, like a trained model's
        for layer in model.model.layers[draft_layers:]:
            layer.self_attn.o_proj.weight.mul_(later_scale)
            layer.mlp.down_proj.weight.mul_(later_scale)
    dirs = []
    for name, keep in (("target", layers), ("drafter", draft_layers)):
        d = out / name
        m = model
        if keep < layers:
            m = LlamaForCausalLM(LlamaConfig(**{**cfg.to_dict(), "num_hidden_layers": keep})).eval()
            m.load_state_dict(model.state_dict(), strict=False)
        m.save_pretrained(d / "hf")
        (d / "onnx").mkdir(parents=True, exist_ok=True)
        meta = {
            "name": f"random-{size}-{name}",
            "num_layers": keep,
            "vocab_size": vocab,
            "max_context": context,
            "eos_ids": [2],
        }
        (d / "onnx" / "model.json").write_text(json.dumps(meta))
        dirs.append(d)
    return dirs[0], dirs[1]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prompts(batch: int, length: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [[1, *torch.randint(3, vocab, (length - 1,), generator=g).tolist()] for _ in range(batch)]


def plain(engine: TorchEngine, ps: list[list[int]], tokens: int, params: SamplingParams, device: str):
    out: list[list[int]] = [[] for _ in ps]
    sync(device)
    t0 = time.perf_counter()
    pending = [SeqStep(seq_id=i, append=p, params=params, seed=100 + i, max_emit=tokens) for i, p in enumerate(ps)]
    while pending:
        for r in engine.step(pending):
            out[r.seq_id] += r.tokens
        pending = [
            SeqStep(seq_id=i, append=[out[i][-1]], params=params, seed=100 + i, max_emit=tokens - len(out[i]))
            for i in range(len(ps))
            if len(out[i]) < tokens and out[i][-1] not in engine.eos_ids
        ]
    sync(device)
    wall = time.perf_counter() - t0
    for i in range(len(ps)):
        engine.release(i)
    return out, wall


def vanilla(target: TorchEngine, drafter: TorchEngine, ps, tokens: int, k: int, params, device: str):
    """Coupled speculation: greedy chain drafts of k tokens, one verify pass per step."""
    greedy = SamplingParams(temperature=0.0)
    out: list[list[int]] = [[] for _ in ps]
    drafted_cache = [0] * len(ps)  # tokens of prompt + out the drafter has cached
    proposed = accepted = 0
    sync(device)
    t0 = time.perf_counter()
    first = [SeqStep(seq_id=i, append=p, params=params, seed=100 + i, max_emit=tokens) for i, p in enumerate(ps)]
    for r in target.step(first):
        out[r.seq_id] += r.tokens
    while True:
        live = [i for i in range(len(ps)) if len(out[i]) < tokens and out[i][-1] not in target.eos_ids]
        if not live:
            break
        ctx = {i: ps[i] + out[i] for i in live}
        depth = {i: min(k, tokens - len(out[i]) - 1) for i in live}
        drafts: dict[int, list[int]] = {i: [] for i in live}
        # draft: append what the drafter has not seen, then feed its own greedy tokens back
        feed = {i: ctx[i][drafted_cache[i] :] for i in live}
        for _ in range(max(depth.values(), default=0)):
            asking = [i for i in live if len(drafts[i]) < depth[i]]
            if not asking:
                break
            steps = [SeqStep(seq_id=i, append=feed[i], params=greedy, seed=0, max_emit=1) for i in asking]
            for r in drafter.step(steps):
                drafts[r.seq_id].append(r.tokens[0])
                feed[r.seq_id] = [r.tokens[0]]
        for i in live:
            drafted_cache[i] = drafter.cached_length(i)
        steps = [
            SeqStep(
                seq_id=i,
                append=[out[i][-1]],
                trie_tokens=drafts[i],
                trie_parents=list(range(-1, len(drafts[i]) - 1)),
                params=params,
                seed=100 + i,
                max_emit=tokens - len(out[i]),
            )
            for i in live
        ]
        for r in target.step(steps):
            i = r.seq_id
            proposed += len(drafts[i])
            accepted += r.accepted
            before = len(ctx[i])
            out[i] += r.tokens
            # the drafter keeps only the drafts that were accepted
            keep = min(drafted_cache[i], before + r.accepted)
            drafter.truncate(i, keep)
            drafted_cache[i] = keep
    sync(device)
    wall = time.perf_counter() - t0
    for i in range(len(ps)):
        target.release(i)
        drafter.release(i)
    return out, wall, accepted / max(1, proposed)


def verify_cost(engine: TorchEngine, batches, nodes_list, context: int, device: str, repeats: int = 3):
    rows = []
    for b in batches:
        ps = prompts(b, context, engine.vocab_size)
        engine.step([SeqStep(seq_id=i, append=p, seed=i, max_emit=1) for i, p in enumerate(ps)])
        for nodes in nodes_list:
            times = []
            for _ in range(repeats):
                lengths = [engine.cached_length(i) for i in range(b)]
                steps = [
                    SeqStep(
                        seq_id=i,
                        append=[5],
                        trie_tokens=[7] * nodes,
                        trie_parents=list(range(-1, nodes - 1)),
                        seed=i,
                        max_emit=nodes + 1,
                    )
                    for i in range(b)
                ]
                sync(device)
                t0 = time.perf_counter()
                engine.step(steps)
                sync(device)
                times.append(time.perf_counter() - t0)
                for i in range(b):
                    engine.truncate(i, lengths[i])
            rows.append((b, nodes, min(times) * 1000))
        for i in range(b):
            engine.release(i)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--later-scale", type=float, default=0.05, help="scale of later layers' residual outputs")
    ap.add_argument("--head-scale", type=float, default=30.0, help="output head scale (peakier distributions)")
    ap.add_argument("--draft-layers", type=int, default=4)
    ap.add_argument("--draft-len", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--context", type=int, default=1024, help="model context (and KV capacity)")
    ap.add_argument("--cost-batches", default="1,8,32")
    ap.add_argument("--cost-nodes", default="0,4,8")
    ap.add_argument("--cost-context", type=int, default=512)
    args = ap.parse_args(argv)
    dev = args.device
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.startswith('cuda') else 'cpu'}), torch {torch.__version__}")
    cost_batches = [int(x) for x in args.cost_batches.split(",")]
    slots = max(args.batch, *cost_batches)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        target_dir, drafter_dir = build(
            args.size, args.later_scale, args.head_scale, args.draft_layers, args.context, Path(tmp)
        )
        target = TorchEngine(target_dir, max_batch=slots, device=dev)
        drafter = TorchEngine(drafter_dir, max_batch=args.batch, device=dev)
        params_count = sum(p.numel() for p in target.hf_model.parameters())
        print(f"model {args.size}: {params_count / 1e9:.2f}B parameters, {target.num_layers} layers; drafter "
              f"{args.draft_layers} layers; later-layer scale {args.later_scale}; built in {time.perf_counter() - t0:.1f}s")
        params = SamplingParams(temperature=args.temperature)
        ps = prompts(args.batch, 32, target.vocab_size)
        plain(target, ps[:1], 4, params, dev)  # warm-up
        ref, wall_p = plain(target, ps, args.tokens, params, dev)
        n_tokens = sum(len(o) for o in ref)
        spec, wall_v, acceptance = vanilla(target, drafter, ps, args.tokens, args.draft_len, params, dev)
        same = sum(a == b for a, b in zip(ref, spec, strict=True))
        print(f"plain:   {n_tokens} tokens in {wall_p:.2f}s = {n_tokens / wall_p:.1f} tokens/s (batch {args.batch})")
        print(f"vanilla: {n_tokens} tokens in {wall_v:.2f}s = {n_tokens / wall_v:.1f} tokens/s, draft length "
              f"{args.draft_len}, acceptance {acceptance:.3f}, speed-up {wall_p / wall_v:.2f}x")
        print(f"exactness: {same}/{len(ref)} sequences identical to plain" + ("" if same == len(ref) else "  MISMATCH"))
        print(f"verify-step cost at context {args.cost_context} (ms, best of 3):")
        nodes = [int(x) for x in args.cost_nodes.split(",")]
        rows = verify_cost(target, cost_batches, nodes, args.cost_context, dev)
        print("  batch " + "".join(f"  nodes={n:<4d}" for n in nodes))
        for b in cost_batches:
            print(f"  {b:5d} " + "".join(f"  {ms:10.2f}" for bb, n, ms in rows if bb == b))
    return 0 if same == len(ref) else 1


if __name__ == "__main__":
    sys.exit(main())
