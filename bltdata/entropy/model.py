"""The entropy model: a small causal byte transformer with sliding-window attention.

Architecture (docs/design.md §4): token embedding over the 260-id byte vocabulary, pre-norm blocks
(RMSNorm → attention with RoPE → residual, RMSNorm → SwiGLU → residual), a final RMSNorm
and an untied output projection. Position ``i`` attends to positions ``i - window + 1 .. i``
(itself included), so a layer never looks further back than ``window - 1`` bytes.

RoPE uses the *interleaved* pair layout (dimensions ``2j`` and ``2j + 1`` of a head are
rotated together by ``pos · θ^(-2j/head_dim)``), the layout of the reference checkpoints, so
imported weights need no permutation. Rotation angles are computed in float64 from absolute
positions and then cast, so positions far beyond ``max_seqlen`` (long documents) keep their
precision and chunked scoring equals unchunked scoring.

Two ways to run the model:

- ``model(tokens, doc_ids=...)`` — a whole (packed) sequence at once, as in training; with
  ``doc_ids`` attention stays inside each document and positions restart at every document.
- ``model(tokens, start_pos=p, cache=cache)`` — incremental: ``tokens`` continue a sequence
  whose previous keys/values sit in ``cache`` (a :class:`KVCache`, updated in place). The
  cache keeps each layer's last ``window - 1`` post-RoPE keys and values, exactly what the
  next position can still see, so a long document scored chunk by chunk gives the same
  logits as scored in one piece.

Attention is ``scaled_dot_product_attention`` in one of three layouts (:class:`AttentionLayout`):
plain causal when no key can be out of the window; one dense boolean mask for short
sequences; and, once a query would face three windows of keys or more, *block-local*:
queries in blocks of ``window`` positions, each against its own ``2·window - 1`` keys, so the
cost grows as T·window instead of T². (FlexAttention would need ``torch.compile`` on CPU.)
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bltdata.ids import VOCAB_SIZE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EntropyModelConfig:
    """Shape of an entropy model; everything needed to rebuild it from a checkpoint."""

    dim: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    window: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = VOCAB_SIZE
    max_seqlen: int = 8192  # the training sequence length (informational: RoPE is computed per position)

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "ffn_hidden", "window", "vocab_size", "max_seqlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EntropyModelConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size {self.vocab_size} is smaller than the byte vocabulary ({VOCAB_SIZE})")
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            raise ValueError("rope_theta and norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EntropyModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown entropy model config keys: {unknown}")
        return cls(**d)


def forward_flops(config: EntropyModelConfig, length: int) -> float:
    """Matrix-multiply FLOPs of scoring one document of ``length`` positions (2 per multiply-add).

    Counted as in :mod:`bltdata.blt.flops`: the projections, 4 · dim · (keys attended) per
    query and layer for attention (sliding window, keys averaged over the row) and the output
    head; embedding lookups, norms and softmax are not counted. Padding is not counted
    either: this is the useful work, the same whichever way the document is batched.
    """
    from bltdata.blt.flops import block_flops, mean_keys

    block = block_flops(config.dim, mean_keys(length, config.window), hidden=config.ffn_hidden)
    return length * (config.n_layers * block + 2 * config.dim * config.vocab_size)


def tiny() -> EntropyModelConfig:
    """For tests: 2 layers, dim 64, window 64 (~0.1 M parameters)."""
    return EntropyModelConfig(dim=64, n_layers=2, n_heads=2, ffn_hidden=192, window=64, max_seqlen=256)


def small() -> EntropyModelConfig:
    """The bundled default model: trains on a few CPU cores in minutes, ~1.2 M parameters."""
    return EntropyModelConfig(dim=192, n_layers=3, n_heads=3, ffn_hidden=512, window=256, max_seqlen=512)


def paper_100m() -> EntropyModelConfig:
    """The paper's entropy model: 14 layers, dim 768, 12 heads, SwiGLU 2048, window 512."""
    return EntropyModelConfig(dim=768, n_layers=14, n_heads=12, ffn_hidden=2048, window=512, max_seqlen=8192)


PRESETS = {"tiny": tiny, "small": small, "paper-100m": paper_100m}


def preset(name: str) -> EntropyModelConfig:
    """The config of a named preset; ValueError listing the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown entropy model preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, with a learned gain; the result has the gain's dtype
    (a bf16 gain feeds bf16 projections, a float32 one keeps float32)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(self.weight.dtype)


def rope_rotations(positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Unit complex rotations ``exp(i · pos · θ^(-2j/head_dim))`` (complex64, ``positions.shape + (head_dim/2,)``).

    Angles are formed in float64 so that large absolute positions keep their precision.
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[2j], x[2j+1])`` of ``x`` (B, T, H, hd); rotations broadcast to (B, T, 1, hd/2)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, H, hd/2)
    return torch.view_as_real(pairs * rotations).flatten(-2).type_as(x)


@dataclass
class KVCache:
    """Per-layer post-RoPE keys/values of the last ``window - 1`` positions of every row.

    All rows share positions: ``keys[l][:, :, j]`` is absolute position ``end - length + j``.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    end: int = 0  # absolute position one past the last cached key

    @classmethod
    def empty(cls, n_layers: int) -> "KVCache":
        return cls(keys=[None] * n_layers, values=[None] * n_layers, end=0)

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def select_rows(self, start: int) -> "KVCache":
        """A cache over rows ``start:`` only (finished documents dropped)."""
        if self.keys[0] is None:
            return self
        return KVCache([k[start:] for k in self.keys], [v[start:] for v in self.values], self.end)


class Attention(nn.Module):
    """Multi-head self-attention with RoPE and a sliding-window causal mask (SDPA)."""

    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.window = config.n_heads, config.head_dim, config.window
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.proj = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x, rotations, layout: "AttentionLayout", cache: KVCache | None = None, layer: int = 0):
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)
        q, k = apply_rope(qkv[:, :, :2], rotations.unsqueeze(2)).unbind(2)  # 2 × (B, T, H, hd), one kernel
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, H, T, hd)
        if cache is not None:
            if cache.keys[layer] is not None:
                k = torch.cat((cache.keys[layer], k), dim=2)
                v = torch.cat((cache.values[layer], v), dim=2)
            drop = max(k.shape[2] - (self.window - 1), 0)  # keep the last window - 1 positions
            cache.keys[layer], cache.values[layer] = k[:, :, drop:], v[:, :, drop:]
        if layout.block:
            out = local_attention(q, k, v, layout, self.window)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.bias(q.dtype), is_causal=layout.causal)
        return self.proj(out.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with gate and up fused in one projection."""

    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(config.dim, 2 * config.ffn_hidden, bias=False)
        self.down = nn.Linear(config.ffn_hidden, config.dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x, rotations, layout, cache=None, layer=0):
        x = x + self.attn(self.attn_norm(x), rotations, layout, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class EntropyModel(nn.Module):
    """Causal byte LM; ``forward`` returns logits (B, T, vocab_size)."""

    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self, seed: int | None = None) -> None:
        """Truncated-normal init (std dim^-0.5; output projections scaled by depth)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.dim ** -0.5
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
                continue
            s = out_std if name.endswith(("attn.proj.weight", "mlp.down.weight")) else std
            nn.init.trunc_normal_(param, std=s, a=-3 * s, b=3 * s, generator=generator)

    def num_params(self, *, embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total if embeddings else total - self.embed.weight.numel()

    def forward(self, tokens: torch.Tensor, *, doc_ids: torch.Tensor | None = None,
                start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        B, T = tokens.shape
        if doc_ids is not None:
            if cache is not None:
                raise ValueError("doc_ids (packed training sequences) and cache (incremental scoring) exclude each other")
            positions, layout = packed_positions_and_layout(doc_ids, self.config.window)
            rotations = rope_rotations(positions, self.config.head_dim, self.config.rope_theta).unsqueeze(2)
        else:
            past = 0 if cache is None else cache.length
            if cache is not None and past and cache.end != start_pos:
                raise ValueError(f"cache ends at position {cache.end} but the chunk starts at {start_pos}")
            positions = torch.arange(start_pos, start_pos + T, device=tokens.device)
            rotations = rope_rotations(positions, self.config.head_dim, self.config.rope_theta).unsqueeze(1)
            layout = window_layout(start_pos, T, past, self.config.window, tokens.device)
        h = self.embed(tokens)  # (B, T, dim)
        for layer, block in enumerate(self.blocks):
            h = block(h, rotations, layout, cache, layer)
        if cache is not None:
            cache.end = start_pos + T
        return self.output(self.final_norm(h))  # (B, T, vocab)


@dataclass
class AttentionLayout:
    """How one forward pass attends.

    - ``causal``: plain causal attention (no key further back than the window exists);
    - ``block == 0``: dense, ``mask`` over all keys, (q_len, past + q_len) or (B, 1, T, T);
    - ``block > 0``: local, queries in blocks of ``block`` positions, each against its own
      span of ``block + window - 1`` keys; ``mask`` (n_blocks, block, span) or
      (B, 1, n_blocks, block, span).
    """

    mask: torch.Tensor | None
    block: int = 0
    causal: bool = False
    _biases: dict = dataclasses.field(default_factory=dict)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The dense mask as an additive bias (0 / -inf) in ``dtype``, built once per forward.

        SDPA turns a boolean mask into exactly this bias on every call; building it once
        saves that work in every layer after the first.
        """
        if self.mask is None:
            return None
        if dtype not in self._biases:
            self._biases[dtype] = _additive(self.mask, dtype)
        return self._biases[dtype]

    def band_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The (1, 1, block, 2·block - 1) band of :func:`banded_attention` as a bias, built once per forward."""
        key = ("band", dtype)
        if key not in self._biases:
            r = torch.arange(self.block, device=self.mask.device).unsqueeze(1)
            c = torch.arange(2 * self.block - 1, device=self.mask.device).unsqueeze(0)
            self._biases[key] = _additive((c >= r) & (c < r + self.block), dtype)[None, None]
        return self._biases[key]

    def bias_per_head(self, n_heads: int, dtype: torch.dtype) -> torch.Tensor:
        """The local mask as a bias (1 or B, n_heads · n_blocks, block, span), built once per forward."""
        key = (n_heads, dtype)
        if key not in self._biases:
            mask = self.mask if self.mask.dim() == 5 else self.mask.unsqueeze(0).unsqueeze(0)
            b, _, nb, block, span = mask.shape
            per_head = mask.expand(b, n_heads, nb, block, span).reshape(b, n_heads * nb, block, span)
            self._biases[key] = _additive(per_head, dtype)
        return self._biases[key]


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``mask`` allows attention, -inf where it forbids it (what SDPA does to a bool mask)."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.full((), float("-inf"), dtype=dtype, device=mask.device))


def use_local_blocks(q_len: int, past: int, window: int) -> bool:
    """Local blocks pay off once a query would see many more keys than the window."""
    return q_len + past >= 3 * window


def window_layout(start_pos: int, q_len: int, past: int, window: int, device) -> AttentionLayout:
    """Sliding-window causal attention for queries at start_pos.. over ``past`` cached keys."""
    if past == 0 and q_len <= window:
        return AttentionLayout(None, causal=True)
    if use_local_blocks(q_len, past, window):
        return AttentionLayout(local_window_mask(start_pos, q_len, past, window, device), block=window)
    return AttentionLayout(window_mask(start_pos, q_len, past, window, device))


def window_mask(start_pos: int, q_len: int, past: int, window: int, device) -> torch.Tensor:
    """Boolean (q_len, past + q_len) mask: query at p sees keys at p - window + 1 .. p."""
    q_pos = torch.arange(start_pos, start_pos + q_len, device=device).unsqueeze(1)
    k_pos = torch.arange(start_pos - past, start_pos + q_len, device=device).unsqueeze(0)
    return (k_pos <= q_pos) & (q_pos - k_pos < window)


def local_window_mask(start_pos: int, q_len: int, past: int, window: int, device) -> torch.Tensor:
    """(n_blocks, window, 2·window - 1) mask of :func:`local_attention` with block = window.

    Key slot c of block j is position start_pos - (window - 1) + j·window + c; slots before
    the cached keys (a short cache) are padding and never seen.
    """
    block, span = window, 2 * window - 1
    n_blocks = -(-q_len // block)
    j = torch.arange(n_blocks, device=device).view(-1, 1, 1) * block
    q_pos = start_pos + j + torch.arange(block, device=device).view(1, -1, 1)
    k_pos = start_pos - (window - 1) + j + torch.arange(span, device=device).view(1, 1, -1)
    return (k_pos <= q_pos) & (q_pos - k_pos < window) & (k_pos >= start_pos - past)


def local_attention(q, k, v, layout: AttentionLayout, window: int) -> torch.Tensor:
    """Sliding-window attention computed block by block: cost ∝ T · (block + window), not T².

    q: (B, H, T, hd); k, v: (B, H, past + T, hd) with past ≤ window - 1 (see
    :func:`blockwise_attention`). When every key slot a real query can see holds a real key —
    a full cache, or no cache once the first block is set aside — all blocks share one band
    mask, which SDPA broadcasts (:func:`banded_attention`); otherwise (packed documents, a
    short cache) each block gets its own mask.
    """
    block, past = layout.block, k.shape[2] - q.shape[2]
    if layout.mask.dim() == 3 and block == window:
        if past == window - 1:
            return banded_attention(q, k, v, layout)
        if past == 0:  # block 0 would reach before position 0: plain causal attention over itself
            first = F.scaled_dot_product_attention(q[:, :, :block], k[:, :, :block], v[:, :, :block], is_causal=True)
            return torch.cat((first, banded_attention(q[:, :, block:], k[:, :, 1:], v[:, :, 1:], layout)), dim=2)
    return blockwise_attention(q, k, v, block, window, layout.bias_per_head(q.shape[1], q.dtype))


def banded_attention(q, k, v, layout: AttentionLayout) -> torch.Tensor:
    """Local attention where block j of queries sees key slots ``j·block .. j·block + 2·block - 2``.

    q: (B, H, T, hd); k, v: (B, H, block - 1 + T, hd), every slot a real key (block = window).
    Query r of a block sees slots r .. r + block - 1 (the last one is itself), the same band
    in every block, so one (block, 2·block - 1) mask serves the whole batch; slots past the
    end (right padding) are beyond every real query and never seen by one.
    """
    T, block = q.shape[2], layout.block
    if k.shape[2] != block - 1 + T:
        raise ValueError(f"banded attention needs {block - 1 + T} keys for {T} queries, got {k.shape[2]}")
    return blockwise_attention(q, k, v, block, block, layout.band_bias(q.dtype))


def blockwise_attention(q, k, v, block: int, window: int, bias: torch.Tensor) -> torch.Tensor:
    """SDPA of each block of ``block`` queries against its own span of ``block + window - 1`` keys.

    q: (B, H, T, hd); k, v: (B, H, past + T, hd) with past ≤ window - 1. Queries are padded
    to whole blocks and keys on both sides so that block j's keys are one contiguous span
    (slot c is position start - (window - 1) + j·block + c); blocks are folded into the head
    axis so SDPA sees ordinary 4-d inputs. ``bias`` broadcasts to (B, H · n_blocks, block, span).
    """
    B, H, T, hd = q.shape
    past = k.shape[2] - T
    n_blocks = -(-T // block)
    pad = n_blocks * block - T
    span = block + window - 1

    def spans(x):  # (B, H, past + T, hd) -> (B, H · nb, span, hd)
        x = F.pad(x, (0, 0, window - 1 - past, pad)).unfold(2, span, block)  # (B, H, nb, hd, span)
        return x.transpose(-1, -2).reshape(B, H * n_blocks, span, hd)

    q = F.pad(q, (0, 0, 0, pad)).reshape(B, H * n_blocks, block, hd)
    out = F.scaled_dot_product_attention(q, spans(k), spans(v), attn_mask=bias)
    return out.view(B, H, n_blocks * block, hd)[:, :, :T]


def packed_positions_and_layout(doc_ids: torch.Tensor, window: int) -> tuple[torch.Tensor, AttentionLayout]:
    """Per-document positions (B, T) and the attention layout of rows packing several documents.

    ``doc_ids`` numbers the documents of each row in non-decreasing order; a position's
    RoPE index counts from its document's first token in the row, and attention stays
    inside the document.
    """
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts_here = torch.ones_like(doc_ids, dtype=torch.bool)
    starts_here[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    doc_start = torch.cummax(torch.where(starts_here, idx, torch.zeros_like(idx)), dim=1).values
    positions = idx - doc_start
    if not use_local_blocks(T, 0, window):
        same_doc = doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1)
        return positions, AttentionLayout((same_doc & window_mask(0, T, 0, window, doc_ids.device)).unsqueeze(1))
    n_blocks = -(-T // window)
    pad = n_blocks * window - T
    k_doc = F.pad(doc_ids, (window - 1, pad), value=-1).unfold(1, 2 * window - 1, window)  # (B, nb, span)
    q_doc = F.pad(doc_ids, (0, pad), value=-1).view(B, n_blocks, window)  # padding queries see padding keys
    same_doc = q_doc.unsqueeze(-1) == k_doc.unsqueeze(-2)  # (B, nb, block, span)
    mask = local_window_mask(0, T, 0, window, doc_ids.device) & same_doc
    return positions, AttentionLayout(mask.unsqueeze(1), block=window)
