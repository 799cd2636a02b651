"""The torch engine: the step of ``src/engine/engine.ts`` on a transformers checkpoint, in torch.

It runs the trie graph of ``specactor.models.onnx_graph`` (:class:`TrieLlama`, the module the ONNX
engine exports) over a KV cache it owns, and reproduces ``src/engine/onnx-engine.ts`` step for step,
so that the seeded sampling rule makes every engine emit the same tokens.

**KV cache.** Allocated once, when the engine is built: per layer, keys ``[S, KV, C, D]`` and values
``[S, KV, D, C]`` (transposed, the layouts the graph streams as the left-hand matrix of its matmuls),
``S = max_batch`` slots and ``C = max_context`` positions, zero-filled (stale entries of a slot are
finite and always masked; uninitialised memory could hold NaNs, which masking cannot remove). Every
live sequence owns one slot and the live sequences occupy slots ``[0, live)``: a release moves the
last sequence into the freed slot (an in-place copy), so a step over every live sequence reads its
past as a view. A step's past is ``[:, :, :P]`` of the batch's slots (``P`` the longest cached
length in the batch): a view when the slots form a contiguous range, else a gather. New KV is written
in place, by an index copy of the kept rows. Memory: ``2 * L * S * KV * C * D * itemsize`` bytes.
:meth:`TorchEngine.release_memory` frees it (with no live sequence; on CUDA it also returns the
cached blocks to the driver) for a trainer that needs the device between rollouts, and
:meth:`TorchEngine.restore_memory` allocates it again, zero-filled; a step on a released engine
restores it first.

**A step** (B sequences; sequence i has ``cached_i`` cached tokens, ``A_i`` appended tokens and a trie
of ``K_i`` nodes; ``N = max_i (A_i + K_i)``, ``P = max_i cached_i``): one forward pass over ``[B, N]``
new tokens, ragged sequences padded exactly like onnx-engine.ts:

    input_ids[i, j]     append[j] (j < A), trie token k (j = A + k), 0 for padding
    position_ids[i, j]  cached + j (j < A), cached + A - 1 + depth(k) (j = A + k), 0 for padding
    attn_mask[i, 0, t, j]  additive, key-major [B, 1, P + N, N]: 0 where new token j sees position t
                        (past t < P, then new t = P + j'), else MASK_VALUE:
        appended j      past t < cached, and new j' <= j
        trie node k     past t < cached, every appended token, and node k and its ancestors
        padding j       itself only (new j' = j), so no row is empty
    logits_index        per sequence: row i * N + A - 1 (the root, the last appended token), then
                        rows i * N + A + k (trie node k); logits are computed for these rows only

**Sampling and the walk** (``src/engine/walk.ts``, docs/SAMPLING.md). The root's row samples
absolute position ``cached + A`` and node k's row position ``cached + A + depth(k)``, with
:func:`specactor.sampling.sample` (bit-exact with TypeScript). From the root: sample the current
node's row; emit the token; stop after an EOS or ``max_emit`` tokens; if a child of the current node
carries the token, descend to it (an accepted draft token) and repeat, otherwise stop. A request's
``stop_ids`` end it like an EOS (the stop token is emitted, nothing after it). Only rows the walk
visits are sampled.

**KV kept**: the ``A`` appended tokens, then the accepted trie nodes (root-most first), at positions
``cached .. cached + A + accepted - 1``. The last emitted token is not cached: the next step appends
it. Nothing changes (no slot taken, no KV written) unless the whole step succeeds.

**Weights** can be replaced in place with :meth:`TorchEngine.load_weights` (HF parameter names); see
``specactor.worker.process`` for how a trainer sequences that against the rollout server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.onnx_graph import MASK_VALUE, TrieLlama
from ..sampling import MAX_SEED, SamplingParams, sample

SUPPORTED_DTYPES = (torch.float32, torch.float64)


class EngineError(RuntimeError):
    """The engine could not run a step (wire code ``engine_failed``)."""


class InvalidRequest(EngineError, ValueError):
    """A request the engine cannot serve: bad tokens, over the context or the slots, ... (wire code
    ``invalid_request``). Raised before anything changes."""


class WeightLoadError(EngineError, ValueError):
    """``load_weights`` was given a name the model does not have, or a tensor of the wrong shape."""


@dataclass(kw_only=True)
class SeqStep:
    """One sequence's part of a step (``SeqStep`` of ``src/engine/engine.ts``)."""

    seq_id: int
    append: list[int]  # tokens to feed after those already cached; at least one
    trie_tokens: list[int] = field(default_factory=list)
    trie_parents: list[int] = field(default_factory=list)  # -1: below the last appended token
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int
    max_emit: int  # at most this many tokens are emitted, at least 1
    stop_ids: list[int] = field(default_factory=list)  # end the sample like an EOS (emitted)


@dataclass
class SeqResult:
    """Emitted tokens: accepted draft tokens, then the sample at the deepest visited node."""

    seq_id: int
    tokens: list[int]
    log_probs: list[float]
    accepted: int  # how many of ``tokens`` are accepted draft tokens


@dataclass
class Walk:
    tokens: list[int]
    log_probs: list[float]
    accepted_nodes: list[int]  # trie nodes on the accepted path, root-most first


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def trie_depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node (children of the root have depth 1); parents must precede children."""
    depth: list[int] = []
    for i, p in enumerate(parents):
        if not _is_int(p) or not -1 <= p < i:
            raise InvalidRequest(f"trie node {i} has parent {p!r}; parents must precede their children")
        depth.append(1 if p < 0 else depth[p] + 1)
    return depth


def walk_trie(
    tokens: Sequence[int],
    parents: Sequence[int],
    sample_at: Callable[[int], tuple[int, float]],
    eos_ids: Sequence[int],
    max_emit: int,
    stop_ids: Sequence[int] = (),
) -> Walk:
    """The walk of ``src/engine/walk.ts``; ``sample_at(node)`` samples a row (-1: the root). It stops
    after a token that ends the sample (an EOS id or one of the request's ``stop_ids``, emitted) or
    ``max_emit`` tokens."""
    children: list[list[int]] = [[] for _ in range(len(tokens) + 1)]
    for i, p in enumerate(parents):
        children[p + 1].append(i)
    walk = Walk([], [], [])
    node = -1
    while True:
        token, logprob = sample_at(node)
        walk.tokens.append(token)
        walk.log_probs.append(logprob)
        if token in eos_ids or token in stop_ids or len(walk.tokens) >= max_emit:
            return walk
        nxt = next((c for c in children[node + 1] if tokens[c] == token), None)
        if nxt is None:
            return walk
        walk.accepted_nodes.append(nxt)
        node = nxt


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        names = {str(d).removeprefix("torch."): d for d in SUPPORTED_DTYPES}
        if dtype not in names:
            raise ValueError(f"dtype {dtype!r} is not supported (one of {', '.join(names)})")
        dtype = names[dtype]
    if dtype not in SUPPORTED_DTYPES:
        # TrieLlama computes the rotary embedding in float32, which promotes half-precision q/k and
        # breaks its matmuls against a half-precision cache; the graph would need a cast first.
        raise ValueError(f"dtype {dtype} is not supported (the trie graph runs in float32 or float64)")
    return dtype


class TorchEngine:
    """A prepared model directory (``hf/`` + ``onnx/model.json``) run by torch; see the module doc.

    ``max_batch`` is the slot count (most live sequences, hence most sequences in one step);
    ``max_context`` the positions per slot (default and upper bound: the model's context). ``threads``
    sets torch's intra-op threads (process-wide). Steps, truncates, releases and weight loads are
    serialised by one lock, so a trainer thread may call :meth:`load_weights` while a worker thread
    serves steps (but see ``specactor.worker.process`` for the sequencing that keeps samples exact).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_batch: int = 8,
        max_context: int | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM

        model_dir = Path(model_dir)
        meta_path = model_dir / "onnx" / "model.json"
        if not meta_path.is_file():
            raise EngineError(f"not a prepared model directory (no {meta_path})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        model_context = int(self.meta["max_context"])
        max_context = model_context if max_context is None else max_context
        if not isinstance(max_context, int) or not 1 <= max_context <= model_context:
            raise ValueError(f"max_context must be in [1, {model_context}], got {max_context!r}")

        self.dtype = _dtype(dtype)
        self.device = torch.device(device)
        self.model_name: str = str(self.meta.get("name", model_dir.name))
        self.vocab_size = int(self.meta["vocab_size"])
        self.eos_ids: list[int] = [int(t) for t in self.meta["eos_ids"]]
        self.mask_value = float(self.meta.get("mask_value", MASK_VALUE))
        self.max_batch = max_batch
        self.max_context = max_context
        self.weight_version = 0

        hf = AutoModelForCausalLM.from_pretrained(model_dir / "hf", dtype=self.dtype)
        self.hf_model = hf.to(self.device).eval()
        self.model = TrieLlama(self.hf_model).to(self.device).eval()
        if self.hf_model.lm_head.out_features != self.vocab_size:
            raise EngineError(
                f"the checkpoint's output head has {self.hf_model.lm_head.out_features} rows, "
                f"model.json says vocab_size {self.vocab_size}"
            )
        self.num_layers = self.model.num_layers
        self.num_kv_heads = self.model.num_kv_heads
        self.head_dim = self.model.head_dim
        # every parameter under its HF name (tied weights under each of their names)
        self._params: dict[str, torch.Tensor] = dict(self.hf_model.state_dict(keep_vars=True))
        # parameters whose contents are missing: released, or re-allocated and not loaded yet
        self._unloaded: dict[int, torch.Size] = {}

        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._allocate()
        self._slot_of: dict[int, int] = {}
        self._seq_at: list[int] = []  # slot -> sequence, slots [0, live)
        self._lengths: list[int] = []  # slot -> cached length
        self._lock = threading.RLock()

    def _allocate(self) -> None:
        S, KV, C, D = self.max_batch, self.num_kv_heads, self.max_context, self.head_dim
        kw: dict[str, Any] = {"dtype": self.dtype, "device": self.device}
        self.keys = [torch.zeros(S, KV, C, D, **kw) for _ in range(self.num_layers)]
        self.values = [torch.zeros(S, KV, D, C, **kw) for _ in range(self.num_layers)]

    # -- description ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"torch-{self.device.type} {self.model_name} ({self.num_layers} layers, {self.dtype})"

    @property
    def kv_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    @property
    def live(self) -> int:
        """Number of sequences holding a slot."""
        return len(self._seq_at)

    # -- sequences -----------------------------------------------------------------------------------

    def cached_length(self, seq: int) -> int:
        """Number of tokens whose KV the engine holds for ``seq`` (0 if unknown)."""
        s = self._slot_of.get(seq)
        return 0 if s is None else self._lengths[s]

    def truncate(self, seq: int, length: int) -> None:
        """Roll ``seq`` back to its first ``length`` cached tokens."""
        with self._lock:
            s = self._slot_of.get(seq)
            if s is None:
                raise InvalidRequest(f"unknown sequence {seq}")
            current = self._lengths[s]
            if not _is_int(length) or not 0 <= length <= current:
                raise InvalidRequest(f"cannot truncate sequence {seq} of length {current} to {length!r}")
            self._lengths[s] = int(length)

    def release(self, seq: int) -> None:
        """Forget ``seq`` (unknown ids are ignored); the last live sequence moves into its slot."""
        with self._lock:
            s = self._slot_of.pop(seq, None)
            if s is None:
                return
            last = len(self._seq_at) - 1
            if s != last:
                n = self._lengths[last]
                with torch.no_grad():
                    for k, v in zip(self.keys, self.values, strict=True):
                        k[s, :, :n].copy_(k[last, :, :n])
                        v[s, :, :, :n].copy_(v[last, :, :, :n])
                moved = self._seq_at[last]
                self._seq_at[s] = moved
                self._lengths[s] = n
                self._slot_of[moved] = s
            self._seq_at.pop()
            self._lengths.pop()

    def release_all(self) -> None:
        with self._lock:
            self._slot_of.clear()
            self._seq_at.clear()
            self._lengths.clear()

    # -- memory --------------------------------------------------------------------------------------

    @property
    def memory_released(self) -> bool:
        return not self.keys

    def release_memory(self) -> int:
        """Free the KV cache; returns the bytes still held (0). Refused while a sequence is live: its
        cached tokens would be lost."""
        with self._lock:
            if self._seq_at:
                raise InvalidRequest(f"cannot release the KV cache while {self.live} sequence(s) hold it")
            self.keys, self.values = [], []
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return self.kv_bytes

    def restore_memory(self) -> int:
        """Allocate the KV cache again if it was released; returns the bytes held."""
        with self._lock:
            if self.memory_released:
                self._allocate()
            return self.kv_bytes

    # -- weights -------------------------------------------------------------------------------------

    def _unique_params(self) -> list[torch.Tensor]:
        return list({id(p): p for p in self._params.values()}.values())

    @property
    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._unique_params())

    @property
    def weights_loaded(self) -> bool:
        return not self._unloaded

    def release_weights(self) -> int:
        """Free the parameters' storage (veRL's ``release`` with ``free_cache_engine``: the trainer
        needs the device memory while it trains); returns the bytes still held (0). A step raises
        until :meth:`restore_weights` and a :meth:`load_weights` of every parameter put a whole model
        back. Refused while a sequence is live."""
        with self._lock:
            if self._seq_at:
                raise InvalidRequest(f"cannot release the weights while {self.live} sequence(s) are live")
            for p in self._unique_params():
                if p.numel() > 0 or id(p) not in self._unloaded:
                    self._unloaded[id(p)] = p.shape
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return self.weight_bytes

    def restore_weights(self) -> int:
        """Allocate storage for released parameters (contents undefined until loaded); returns bytes."""
        with self._lock:
            for p in self._unique_params():
                shape = self._unloaded.get(id(p))
                if shape is not None and p.numel() == 0 and shape.numel() > 0:
                    p.data = torch.empty(shape, dtype=p.dtype, device=p.device)
            return self.weight_bytes

    def load_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], *, version: int | None = None
    ) -> int:
        """Copy tensors into the model's parameters in place, by HF parameter name; returns the count.

        Names are those of the checkpoint (``model.layers.0.self_attn.q_proj.weight``, ...; a tied
        output head answers to both of its names). Values are converted to the engine's dtype and
        device. Each tensor is checked before it is copied: an unknown name or a shape mismatch raises
        :class:`WeightLoadError`, after the tensors before it were loaded. Call it repeatedly to load a
        model in chunks; ``version`` (if given) sets :attr:`weight_version` afterwards. KV cached for
        live sequences is not recomputed: load weights only while the server is paused (no live
        sequence), see ``specactor.worker.process``.
        """
        count = 0
        with self._lock, torch.no_grad():
            for name, tensor in named_tensors:
                param = self._params.get(name)
                if param is None:
                    raise WeightLoadError(
                        f"unknown parameter {name!r} (expected one of the checkpoint's names)"
                    )
                if param.numel() == 0 and id(param) in self._unloaded:
                    raise WeightLoadError(f"parameter {name!r} is released: call restore_weights() first")
                if tuple(tensor.shape) != tuple(param.shape):
                    raise WeightLoadError(
                        f"parameter {name!r} has shape {tuple(param.shape)}, got {tuple(tensor.shape)}"
                    )
                param.copy_(tensor)
                self._unloaded.pop(id(param), None)
                count += 1
            if version is not None:
                self.weight_version = version
        return count

    # -- the step ------------------------------------------------------------------------------------

    def _validate(self, batch: Sequence[SeqStep]) -> list[list[int]]:
        seen: set[int] = set()
        new = 0
        depths: list[list[int]] = []
        V, C = self.vocab_size, self.max_context
        for s in batch:
            sid = s.seq_id
            if not _is_int(sid):
                raise InvalidRequest(f"sequence id {sid!r} is not an int")
            if sid in seen:
                raise InvalidRequest(f"sequence {sid} appears twice in one step")
            seen.add(sid)
            if len(s.append) < 1:
                raise InvalidRequest(f"sequence {sid}: a step must append at least one token")
            if not _is_int(s.max_emit) or s.max_emit < 1:
                raise InvalidRequest(f"sequence {sid}: max_emit must be an int >= 1, got {s.max_emit!r}")
            if not _is_int(s.seed) or not 0 <= s.seed < MAX_SEED:
                raise InvalidRequest(f"sequence {sid}: seed must be an int in [0, 2^53), got {s.seed!r}")
            if not isinstance(s.params, SamplingParams):
                raise InvalidRequest(f"sequence {sid}: params must be SamplingParams")
            if len(s.trie_tokens) != len(s.trie_parents):
                raise InvalidRequest(
                    f"sequence {sid}: trie has {len(s.trie_tokens)} tokens but {len(s.trie_parents)} parents"
                )
            for t in (*s.append, *s.trie_tokens, *s.stop_ids):
                if not _is_int(t) or not 0 <= t < V:
                    raise InvalidRequest(f"sequence {sid}: token id {t!r} is outside the vocabulary [0, {V})")
            d = trie_depths(s.trie_parents)
            end = self.cached_length(sid) + len(s.append) + max(d, default=0)
            if end > C:
                raise InvalidRequest(f"sequence {sid}: {end} positions exceed the context of {C}")
            if sid not in self._slot_of:
                new += 1
            depths.append(d)
        if self.live + new > self.max_batch:
            raise InvalidRequest(
                f"{new} new sequence(s) with {self.live} live exceed the {self.max_batch} slots (max_batch)"
            )
        return depths

    def step(self, seqs: Sequence[SeqStep]) -> list[SeqResult]:
        """One batched step (see the module doc); results in the order of ``seqs``."""
        if not seqs:
            return []
        with self._lock, torch.no_grad():
            if self._unloaded:
                raise EngineError(
                    f"{len(self._unloaded)} parameter(s) hold no weights (released and not loaded again): "
                    "load the new weights before stepping"
                )
            request_depths = self._validate(seqs)
            self.restore_memory()
            fresh = [s.seq_id for s in seqs if s.seq_id not in self._slot_of]
            for sid in fresh:
                self._slot_of[sid] = len(self._seq_at)
                self._seq_at.append(sid)
                self._lengths.append(0)
            try:
                return self._run(seqs, request_depths)
            except BaseException:
                for sid in reversed(fresh):  # nothing was written for them: give the slots back
                    self.release(sid)
                raise

    def _run(self, request: Sequence[SeqStep], request_depths: list[list[int]]) -> list[SeqResult]:
        # rows follow slot order, so a contiguous slot range reads the cache as a view
        slot_of = [self._slot_of[s.seq_id] for s in request]
        order = sorted(range(len(request)), key=lambda i: slot_of[i])
        batch = [request[i] for i in order]
        depths = [request_depths[i] for i in order]
        slots = [slot_of[i] for i in order]
        B = len(batch)
        cached = [self._lengths[s] for s in slots]
        appends = [len(s.append) for s in batch]
        counts = [a + len(s.trie_tokens) for a, s in zip(appends, batch, strict=True)]
        N = max(counts)
        P = max(cached)
        T = P + N

        input_ids = np.zeros((B, N), dtype=np.int64)
        position_ids = np.zeros((B, N), dtype=np.int64)
        mask = np.full((B, 1, T, N), self.mask_value, dtype=np.float32)
        index: list[int] = []
        rows_of: list[int] = []  # first logits row of each sequence (its root); node k: + 1 + k
        for i, s in enumerate(batch):
            A, K, c = appends[i], len(s.trie_tokens), cached[i]
            m = mask[i, 0]
            input_ids[i, :A] = s.append
            position_ids[i, :A] = np.arange(c, c + A)
            m[:c, : A + K] = 0  # the past, to every real row
            m[P : P + A, :A][np.triu(np.ones((A, A), dtype=bool))] = 0  # causal among appended
            if K:
                input_ids[i, A : A + K] = s.trie_tokens
                position_ids[i, A : A + K] = c + A - 1 + np.asarray(depths[i])
                m[P : P + A, A : A + K] = 0  # trie nodes see every appended token
                ancestors = np.zeros((K, K), dtype=bool)  # [k, n]: n is k or an ancestor of k
                for k, p in enumerate(s.trie_parents):
                    if p >= 0:
                        ancestors[k] = ancestors[p]
                    ancestors[k, k] = True
                m[P + A : P + A + K, A : A + K][ancestors.T] = 0
            pad = np.arange(A + K, N)
            m[P + pad, pad] = 0  # padding rows see themselves
            rows_of.append(len(index))
            index.append(i * N + A - 1)
            index.extend(i * N + A + k for k in range(K))

        dev = self.device
        if P == 0:
            past_k = [k[:B, :, :0] for k in self.keys]  # shape [B, KV, 0, D]; no data is read
            past_v = [v[:B, :, :, :0] for v in self.values]
        elif slots == list(range(slots[0], slots[0] + B)):
            lo, hi = slots[0], slots[0] + B
            past_k = [k[lo:hi, :, :P] for k in self.keys]
            past_v = [v[lo:hi, :, :, :P] for v in self.values]
        else:
            gather = torch.tensor(slots, dtype=torch.int64, device=dev)
            past_k = [k[:, :, :P].index_select(0, gather) for k in self.keys]
            past_v = [v[:, :, :, :P].index_select(0, gather) for v in self.values]
        past = [t for pair in zip(past_k, past_v, strict=True) for t in pair]
        logits, *new_kv = self.model(
            torch.from_numpy(input_ids).to(dev),
            torch.from_numpy(position_ids).to(dev),
            torch.from_numpy(mask).to(device=dev, dtype=self.dtype),
            torch.tensor(index, dtype=torch.int64, device=dev),
            *past,
        )
        rows = logits.float().cpu().numpy()

        walks: list[Walk] = []
        for i, s in enumerate(batch):
            root_position = cached[i] + appends[i]
            d = depths[i]
            first = rows_of[i]

            def sample_at(
                node: int, s: SeqStep = s, d: list[int] = d, first: int = first, pos: int = root_position
            ):
                if node < 0:
                    return sample(rows[first], s.params, s.seed, pos)
                return sample(rows[first + 1 + node], s.params, s.seed, pos + d[node])

            walks.append(
                walk_trie(s.trie_tokens, s.trie_parents, sample_at, self.eos_ids, s.max_emit, s.stop_ids)
            )

        # keep the KV of the appended tokens and of the accepted path only
        results: list[SeqResult | None] = [None] * B
        for i, s in enumerate(batch):
            A, walk, slot, start = appends[i], walks[i], slots[i], cached[i]
            keep = [*range(A), *(A + n for n in walk.accepted_nodes)]
            end = start + len(keep)
            rows_kept = torch.tensor(keep, dtype=torch.int64, device=dev)
            for layer in range(self.num_layers):
                new_k, new_v = new_kv[2 * layer][i], new_kv[2 * layer + 1][i]  # [KV, N, D]
                self.keys[layer][slot, :, start:end].copy_(new_k.index_select(1, rows_kept))
                self.values[layer][slot, :, :, start:end].copy_(
                    new_v.index_select(1, rows_kept).transpose(-1, -2)
                )
            self._lengths[slot] = end
            results[order[i]] = SeqResult(s.seq_id, walk.tokens, walk.log_probs, len(walk.accepted_nodes))
        return [r for r in results if r is not None]
