"""A llama forward pass written for export: one graph verifies a token trie per sequence.

Inputs (B sequences, N new tokens each, P cached positions, R rows to sample):

    input_ids      int64   [B, N]
    position_ids   int64   [B, N]          absolute position of each new token (a trie node: its depth)
    attn_mask      float32 [B, 1, P+N, N]  additive, key-major: entry [b, 0, t, n] = 0 if new token n
                                           may attend to position t (past, then new), else MASK_VALUE
    logits_index   int64   [R]             rows of the flattened [B*N] hidden states to project
    past_key.i     float32 [B, KV, P, D]   read-only cache (the engine owns it)
    past_value.i   float32 [B, KV, D, P]   values stored transposed

Outputs:

    logits         float32 [R, V]          only the rows that can be sampled
    new_key.i      float32 [B, KV, N, D]   rotated keys of the new tokens, for the engine to keep
    new_value.i    float32 [B, KV, N, D]

The cache is not concatenated into a ``present`` output: the engine keeps the entries of the
accepted path only. Attention over the past and the new part is computed separately and joined in
the (small) score space, and it is computed transposed, so that the large operand of both matmuls is
the cache, read once in place as the streamed left-hand matrix, and only tiny query and probability
matrices get packed:

    scores^T [P, G*N] = K [P, D] @ q^T [D, G*N]        (+ mask, then softmax over the key axis)
    out^T    [D, G*N] = V^T [D, P] @ probs^T [P, G*N]

Grouped KV heads are used by stacking the G query heads of a KV head along the column axis
(column g*N + n), so nothing expands K or V to all query heads.

The rotary embedding turns the queries and keys of a layer at once, with the half-swap written as a
flip of a [2, D/2] view and its sign folded into the sine: with x = [x1, x2] and c, s the cosine and
sine of the D/2 frequencies at the token's position,

    rot(x) = x * [c, c] + [x2, x1] * [-s, s]  =  x * cos + rotate_half(x) * sin

(bit for bit: negating a float is exact), so a layer spends no nodes on shape arithmetic and few on
the rotation; at batch 1 the step's cost is largely per-node overhead.
"""

from __future__ import annotations

import torch
from torch import nn

MASK_VALUE = -1.0e9  # exp underflows to exactly 0 in float32; never -inf, so no row can be NaN


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


class TrieLlama(nn.Module):
    """Holds the weights of a ``LlamaForCausalLM`` and runs the graph described above."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        cfg = hf_model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        rope = getattr(cfg, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {rope.get('rope_type')!r} is not supported")
        inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.inner = hf_model.model
        self.lm_head = hf_model.lm_head

    def forward(self, input_ids, position_ids, attn_mask, logits_index, *past):
        B, N = input_ids.shape
        KV, G, D = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        H = KV * G
        h = self.inner.embed_tokens(input_ids)
        freqs = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [B, N, D/2]
        cos = freqs.cos().view(B, N, 1, 1, D // 2)  # broadcast over heads and both halves
        sin = freqs.sin()
        sin = torch.stack((-sin, sin), dim=-2).unsqueeze(2)  # [B, N, 1, 2, D/2]
        # the mask of G stacked query heads, key-major: [B, 1, P+N, G*N]
        mask = attn_mask.repeat(1, 1, 1, G)
        P = past[0].shape[2]
        new_kv = []
        for i, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            x = rms_norm(h, layer.input_layernorm.weight, self.eps)
            qk = torch.cat((attn.q_proj(x), attn.k_proj(x)), dim=-1).view(B, N, H + KV, 2, D // 2)
            qk = qk * cos + qk.flip(-2) * sin
            q = qk[:, :, :H].reshape(B, N, KV, G, D).permute(0, 2, 3, 1, 4)  # [B, KV, G, N, D]
            k = qk[:, :, H:].reshape(B, N, KV, D).transpose(1, 2)  # [B, KV, N, D]
            v = attn.v_proj(x).view(B, N, KV, D).transpose(1, 2)
            new_kv += [k, v]
            qt = (q.reshape(B, KV, G * N, D) * (D**-0.5)).transpose(-1, -2)  # [B, KV, D, G*N]
            past_k, past_vt = past[2 * i], past[2 * i + 1]
            scores = torch.cat((past_k @ qt, k @ qt), dim=-2) + mask  # [B, KV, P+N, G*N]
            # softmax along the last axis is the fast kernel; the transposes back fuse into the matmuls
            probs = torch.softmax(scores.transpose(-1, -2), dim=-1)  # [B, KV, G*N, P+N]
            ot = past_vt @ probs[..., :P].transpose(-1, -2) + v.transpose(-1, -2) @ probs[..., P:].transpose(
                -1, -2
            )
            o = ot.view(B, KV, D, G, N).permute(0, 4, 1, 3, 2).reshape(B, N, KV * G * D)
            h = h + attn.o_proj(o)
            x = rms_norm(h, layer.post_attention_layernorm.weight, self.eps)
            mlp = layer.mlp
            h = h + mlp.down_proj(nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
        h = rms_norm(h, self.inner.norm.weight, self.eps)
        rows = h.reshape(B * N, -1).index_select(0, logits_index)
        return (self.lm_head(rows), *new_kv)


def export_onnx(hf_model: nn.Module, path: str) -> None:
    """Export ``hf_model`` (a float32 ``LlamaForCausalLM``) as the trie graph to ``path``."""
    model = TrieLlama(hf_model).eval()
    L, KV, D = model.num_layers, model.num_kv_heads, model.head_dim
    B, N, P = 2, 3, 4
    ids = torch.zeros(B, N, dtype=torch.int64)
    pos = torch.arange(P, P + N).repeat(B, 1)
    mask = torch.zeros(B, 1, P + N, N)
    index = torch.arange(B * N, dtype=torch.int64)
    past = [torch.zeros((B, KV, P, D) if j % 2 == 0 else (B, KV, D, P)) for j in range(2 * L)]
    past_names = [f"past_{kind}.{i}" for i in range(L) for kind in ("key", "value")]
    new_names = [f"new_{kind}.{i}" for i in range(L) for kind in ("key", "value")]
    dyn = {
        "input_ids": {0: "batch", 1: "new"},
        "position_ids": {0: "batch", 1: "new"},
        "attn_mask": {0: "batch", 2: "total", 3: "new"},
        "logits_index": {0: "rows"},
        "logits": {0: "rows"},
        **{n: {0: "batch", (2 if n.startswith("past_key") else 3): "past"} for n in past_names},
        **{n: {0: "batch", 2: "new"} for n in new_names},
    }
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, pos, mask, index, *past),
            path,
            input_names=["input_ids", "position_ids", "attn_mask", "logits_index", *past_names],
            output_names=["logits", *new_names],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
