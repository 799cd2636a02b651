"""The fused graph (the 8-bit drafter's form) computes what the exported trie graph computes."""

import json

import numpy as np
import onnxruntime as ort
import torch
from specactor.models.fused_graph import build_fused_graph
from transformers import AutoModelForCausalLM


def session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def trie_step(meta: dict, rng: np.random.Generator) -> dict:
    """Two sequences with a cached past: a trie of five nodes (two branches), and a chain whose
    past is partly masked (a shorter sequence in a longer context)."""
    L, KV, D, V = meta["num_layers"], meta["num_kv_heads"], meta["head_dim"], meta["vocab_size"]
    B, P, N = 2, 37, 5
    mask = np.full((B, 1, P + N, N), meta["mask_value"], np.float32)
    mask[:, :, :P, :] = 0
    mask[1, :, 30:P, :] = meta["mask_value"]
    for j, ancestors in enumerate([[0], [0, 1], [0, 2], [0, 2, 3], [0, 2, 3, 4]]):
        for t in ancestors:
            mask[0, 0, P + t, j] = 0
        mask[1, 0, P : P + j + 1, j] = 0
    feeds = {
        "input_ids": rng.integers(0, V, (B, N)),
        "position_ids": np.array([[P, P + 1, P + 1, P + 2, P + 3], [30, 31, 32, 33, 34]], np.int64),
        "attn_mask": mask,
        "logits_index": np.array([0, 1, 2, 4, 5, 9], np.int64),
    }
    for i in range(L):
        feeds[f"past_key.{i}"] = rng.standard_normal((B, KV, P, D)).astype(np.float32)
        feeds[f"past_value.{i}"] = rng.standard_normal((B, KV, D, P)).astype(np.float32)
    return feeds


def test_fused_graph_matches_the_exported_graph(tiny_dir):
    meta = json.loads((tiny_dir / "onnx" / "model.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "hf", dtype=torch.float32).eval()
    fused = build_fused_graph(model)
    assert len(fused.graph.node) <= 32 * meta["num_layers"] + 9  # 43 per layer in the exported graph
    exported = session(str(tiny_dir / "onnx" / "model.onnx"))
    feeds = trie_step(meta, np.random.default_rng(0))
    want = exported.run(None, feeds)
    fused_session = session(fused.SerializeToString())
    got = fused_session.run(None, feeds)
    names = [o.name for o in exported.get_outputs()]
    assert [o.name for o in fused_session.get_outputs()] == names
    for name, w, g in zip(names, want, got):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()), err_msg=name)
    assert (got[0].argmax(-1) == want[0].argmax(-1)).all()
