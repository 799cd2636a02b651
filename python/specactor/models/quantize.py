"""A weight-quantised copy of the policy: the policy itself, cheaper, as a drafter.

Every weight matmul ``y = x @ W`` (W: [K, N], the projections and the output head) becomes ONNX
Runtime's ``MatMulNBits`` with 8-bit symmetric blocks along K,

    W[k, n] ~= s[b, n] * q[k, n],   q in [-128, 127],   s[b, n] = max_{k in block b} |W[k, n]| / 127,

blocks of ``BLOCK`` rows, and ``accuracy_level`` 4: the activations are quantised to int8 per block
at run time and the dot products run in int8 (VNNI where the CPU has it). The graph quantised is the
fused form of the trie graph (``fused_graph.py``: the same inputs and outputs, fewer nodes), so the
engine runs it like the policy; only the embedding gather stays float32.

Why this drafts well: the model drafter samples with the verifier's own Gumbel noise, so a token is
accepted with probability at least (1 - TV) / (1 + TV), TV the total variation between the two
next-token distributions. A quantised copy of the same weights keeps TV small where a smaller or
truncated model cannot, and, at batch 1 where a step streams the weights from memory, costs about
half a float32 step. It needs no training: after a policy update it is re-derived in about a second
(``drift.py`` does so for every drifted epoch).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

BLOCK = 32  # rows of W per scale: 8-bit blocks of 32 keep the per-token agreement near 0.96 on SmolLM2
BITS = 8
ACCURACY_LEVEL = 4  # int8 activations and int8 dot products


def quantize_form(model, src: Path, out: Path, name: str) -> None:
    """Write ``out/onnx`` as the 8-bit fused graph of ``model``, the policy of the form at ``src``
    (whose ``model.json`` it copies, named ``name``)."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    from .fused_graph import build_fused_graph

    logging.getLogger(mnb.__name__).setLevel(logging.WARNING)  # it logs every node it looks at

    config = mnb.DefaultWeightOnlyQuantConfig(
        block_size=BLOCK, is_symmetric=True, accuracy_level=ACCURACY_LEVEL, bits=BITS
    )
    quantizer = mnb.MatMulNBitsQuantizer(build_fused_graph(model), algo_config=config)
    quantizer.process()
    quantized = quantizer.model.model
    if not any(n.op_type == "MatMulNBits" for n in quantized.graph.node):
        raise SystemExit(f"error: quantising {name} left no MatMulNBits node")
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(out / "onnx" / "model.onnx"))
    meta = json.loads((src / "onnx" / "model.json").read_text())
    meta["name"] = name
    meta["graph"] = "fused"
    meta["quantization"] = {"bits": BITS, "block": BLOCK, "accuracy_level": ACCURACY_LEVEL}
    (out / "onnx" / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
