"""The trie graph written node by node for onnxruntime's CPU kernels: the form of the 8-bit drafter.

Same inputs, outputs and math as ``onnx_graph.TrieLlama`` (read that docstring first), so the
engine runs either. The difference is the node count. At batch 1 about 60% of a drafter step streams
the weights and most of the rest is per-node overhead, and the exported graph spends 43 nodes per
layer (after onnxruntime's fusions) largely on shape arithmetic around its matmuls. Here a layer is
32 nodes (31 after the fusions), using onnxruntime's fused contrib ops where the exporter cannot
emit them:

- ``SkipSimplifiedLayerNormalization``: the residual add and the RMS norm of the next block, one node;
- one q/k/v projection with the attention scale ``D**-0.5`` folded into the q columns (1/8 for
  SmolLM2's D = 64: a power of two, so the 8-bit blocks quantise to the same integers), split once;
- ``RotaryEmbedding`` on q and k, with cosine and sine tables of every position
  (``cos[p, i] = cos(p * theta**(-2i/D))``, the non-interleaved half-split rotation);
- attention in the exported graph's layout, but with the transposes folded into ``FusedMatMul``
  and the softmax taken along the key axis, so the cache is read in place and nothing but the tiny
  query and output matrices is transposed:

      scores^T [P+N, G*N] = [K_past; K_new] @ q^T          (FusedMatMul transB, + mask)
      probs^T = softmax over the key axis
      out^T [D, G*N] = V_past^T @ probs^T[:P] + V_new^T @ probs^T[P:]   (FusedMatMul transA)

A drafter may differ from the policy by floating-point rounding (it only proposes; the verifier
decides), but the float32 form of this graph agrees with the exported one to rounding (tested).
"""

from __future__ import annotations

import numpy as np

from .onnx_graph import TrieLlama

CONTRIB = "com.microsoft"


def build_fused_graph(hf_model):
    """The float32 fused trie graph of ``hf_model`` (a ``LlamaForCausalLM``) as an ``onnx.ModelProto``."""
    from onnx import TensorProto, helper, numpy_helper

    ref = TrieLlama(hf_model)  # the checks and derived sizes of the exported graph
    cfg = hf_model.config
    L, H, KV, D = ref.num_layers, ref.num_heads, ref.num_kv_heads, ref.head_dim
    G, hidden, V, eps = H // KV, cfg.hidden_size, cfg.vocab_size, float(ref.eps)
    inits: list = []
    nodes: list = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], contrib: bool = False, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, outputs, domain=CONTRIB if contrib else "", **attrs))
        return outputs[0]

    def weight(linear, scale: float = 1.0) -> np.ndarray:  # y = x @ W^T: MatMul takes W^T [in, out]
        return linear.weight.detach().float().numpy().T * np.float32(scale)

    def ints(name: str, values: list[int]) -> str:
        return init(name, np.array(values, np.int64))

    def norm(name: str, param) -> str:
        return init(name, param.detach().float().numpy())

    def skip_norm(block: str, residual: str, weight_name: str, x: str, h_out: str = "") -> str:
        """x = RMSNorm(block + residual); the sum is written to ``h_out`` (the next residual)."""
        outputs = [x, "", "", h_out] if h_out else [x]
        return node(
            "SkipSimplifiedLayerNormalization",
            [block, residual, weight_name],
            outputs,
            contrib=True,
            epsilon=eps,
        )

    positions = np.arange(cfg.max_position_embeddings, dtype=np.float32)[:, None]
    freqs = positions * ref.inv_freq.numpy()[None, :]
    init("cos_cache", np.cos(freqs))
    init("sin_cache", np.sin(freqs))
    inner = hf_model.model
    init("embed", inner.embed_tokens.weight.detach().float().numpy())
    ints("qkv_sizes", [H * D, KV * D, KV * D])
    ints("shape_bnkd", [0, 0, KV, D])  # [B, N, KV, D]
    ints("shape_bnkgd", [0, 0, KV, G, D])
    ints("shape_bkgnd", [0, KV, -1, D])  # [B, KV, G*N, D]
    ints("shape_bkdgn", [0, KV, D, G, -1])
    ints("shape_bnh", [0, -1, H * D])
    # the sizes [P, N] that split the key axis into past and new
    node("Shape", ["past_key.0"], ["past_len"], start=2, end=3)
    node("Shape", ["input_ids"], ["new_len"], start=1, end=2)
    node("Concat", ["past_len", "new_len"], ["key_split"], axis=0)
    # the mask of the G query heads stacked along the column axis (column g*N + n), as exported
    node("Tile", ["attn_mask", ints("tile_g", [1, 1, 1, G])], ["mask_g"])
    h = node("Gather", ["embed", "input_ids"], ["h0"])
    block_out = None  # the last block's output, added to h by the next norm
    for i, layer in enumerate(inner.layers):
        attn, mlp = layer.self_attn, layer.mlp
        norm_w = norm(f"input_norm.{i}", layer.input_layernorm.weight)
        if block_out is None:
            x = node("SimplifiedLayerNormalization", [h, norm_w], [f"x.{i}"], axis=-1, epsilon=eps)
        else:
            x, h = skip_norm(block_out, h, norm_w, f"x.{i}", f"h.{i}"), f"h.{i}"
        qkv_w = np.concatenate(
            [weight(attn.q_proj, D**-0.5), weight(attn.k_proj), weight(attn.v_proj)], axis=1
        )
        qkv = node("MatMul", [x, init(f"qkv_w.{i}", qkv_w)], [f"qkv.{i}"])
        node("Split", [qkv, "qkv_sizes"], [f"q.{i}", f"k.{i}", f"v.{i}"], axis=-1)
        rot = ["position_ids", "cos_cache", "sin_cache"]
        q = node(
            "RotaryEmbedding", [f"q.{i}", *rot], [f"q_rot.{i}"], contrib=True, num_heads=H, interleaved=0
        )
        k = node(
            "RotaryEmbedding", [f"k.{i}", *rot], [f"k_rot.{i}"], contrib=True, num_heads=KV, interleaved=0
        )
        node("Reshape", [k, "shape_bnkd"], [f"k4.{i}"])
        new_k = node("Transpose", [f"k4.{i}"], [f"new_key.{i}"], perm=[0, 2, 1, 3])  # [B, KV, N, D]
        node("Reshape", [f"v.{i}", "shape_bnkd"], [f"v4.{i}"])
        new_v = node("Transpose", [f"v4.{i}"], [f"new_value.{i}"], perm=[0, 2, 1, 3])
        node("Reshape", [q, "shape_bnkgd"], [f"q5.{i}"])
        node("Transpose", [f"q5.{i}"], [f"q5t.{i}"], perm=[0, 2, 3, 1, 4])  # [B, KV, G, N, D]
        q4 = node("Reshape", [f"q5t.{i}", "shape_bkgnd"], [f"q4.{i}"])
        past = node("FusedMatMul", [f"past_key.{i}", q4], [f"scores_past.{i}"], contrib=True, transB=1)
        new = node("FusedMatMul", [new_k, q4], [f"scores_new.{i}"], contrib=True, transB=1)
        node("Concat", [past, new], [f"scores.{i}"], axis=2)
        node("Add", [f"scores.{i}", "mask_g"], [f"masked.{i}"])
        node("Softmax", [f"masked.{i}"], [f"probs.{i}"], axis=2)  # [B, KV, P+N, G*N]
        node("Split", [f"probs.{i}", "key_split"], [f"probs_past.{i}", f"probs_new.{i}"], axis=2)
        node("MatMul", [f"past_value.{i}", f"probs_past.{i}"], [f"out_past.{i}"])
        node("FusedMatMul", [new_v, f"probs_new.{i}"], [f"out_new.{i}"], contrib=True, transA=1)
        node("Add", [f"out_past.{i}", f"out_new.{i}"], [f"out_t.{i}"])  # [B, KV, D, G*N]
        node("Reshape", [f"out_t.{i}", "shape_bkdgn"], [f"o5.{i}"])
        node("Transpose", [f"o5.{i}"], [f"o5t.{i}"], perm=[0, 4, 1, 3, 2])  # [B, N, KV, G, D]
        o = node("Reshape", [f"o5t.{i}", "shape_bnh"], [f"o.{i}"])
        attn_out = node("MatMul", [o, init(f"o_w.{i}", weight(attn.o_proj))], [f"attn.{i}"])
        post_w = norm(f"post_norm.{i}", layer.post_attention_layernorm.weight)
        x, h = skip_norm(attn_out, h, post_w, f"x2.{i}", f"h2.{i}"), f"h2.{i}"
        gate = node("MatMul", [x, init(f"gate_w.{i}", weight(mlp.gate_proj))], [f"gate.{i}"])
        up = node("MatMul", [x, init(f"up_w.{i}", weight(mlp.up_proj))], [f"up.{i}"])
        node("Sigmoid", [gate], [f"sig.{i}"])  # silu(g) = g * sigmoid(g): one fused node after optimisation
        node("Mul", [gate, f"sig.{i}"], [f"silu.{i}"])
        node("Mul", [f"silu.{i}", up], [f"gated.{i}"])
        block_out = node("MatMul", [f"gated.{i}", init(f"down_w.{i}", weight(mlp.down_proj))], [f"mlp.{i}"])
    skip_norm(block_out, h, norm("final_norm", inner.norm.weight), "h_final")
    node("Reshape", ["h_final", ints("shape_rows", [-1, hidden])], ["h_rows"])
    node("Gather", ["h_rows", "logits_index"], ["rows"], axis=0)
    node("MatMul", ["rows", init("head_w", weight(hf_model.lm_head))], ["logits"])

    value = helper.make_tensor_value_info
    inputs = [
        value("input_ids", TensorProto.INT64, ["batch", "new"]),
        value("position_ids", TensorProto.INT64, ["batch", "new"]),
        value("attn_mask", TensorProto.FLOAT, ["batch", 1, "total", "new"]),
        value("logits_index", TensorProto.INT64, ["rows"]),
    ]
    outputs = [value("logits", TensorProto.FLOAT, ["rows", V])]
    for i in range(L):
        inputs.append(value(f"past_key.{i}", TensorProto.FLOAT, ["batch", KV, "past", D]))
        inputs.append(value(f"past_value.{i}", TensorProto.FLOAT, ["batch", KV, D, "past"]))
        outputs.append(value(f"new_key.{i}", TensorProto.FLOAT, ["batch", KV, "new", D]))
        outputs.append(value(f"new_value.{i}", TensorProto.FLOAT, ["batch", KV, "new", D]))
    graph = helper.make_graph(nodes, "fused_trie_llama", inputs, outputs, inits)
    # IR 10: the newest the installed onnxruntime reads
    return helper.make_model(
        graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(CONTRIB, 1)]
    )
