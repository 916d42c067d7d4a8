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

Attention is ``scaled_dot_product_attention`` in one of three layouts
(:mod:`bltdata.entropy.layout`): plain causal, one dense mask, or block-local (cost ∝
T·window, the kernels of :mod:`bltdata.nn.attention`). (FlexAttention would need
``torch.compile`` on CPU.) The parts are those of :mod:`bltdata.nn` with the conventions of
this model's checkpoints: RMSNorm in float32, RoPE angles in float64, SwiGLU named
``gate_up``/``down``. The config and presets are in :mod:`bltdata.entropy.config`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bltdata.entropy.config import (  # noqa: F401  (re-exported: the model's public names)
    PRESETS,
    EntropyModelConfig,
    forward_flops,
    paper_100m,
    preset,
    small,
    tiny,
)
from bltdata.entropy.layout import (  # noqa: F401  (re-exported)
    AttentionLayout,
    packed_positions_and_layout,
    use_local_blocks,
    window_layout,
)
from bltdata.nn.attention import banded_attention, blockwise_attention
from bltdata.nn.layers import RMSNorm, SwiGLU
from bltdata.nn.rope import apply_rope, rope_tables

logger = logging.getLogger(__name__)


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

    def forward(self, x, rotations, layout: AttentionLayout, cache: KVCache | None = None, layer: int = 0):
        """x (B, T, dim); ``rotations`` the RoPE (cos, sin) tables broadcasting to (B, T, 1, 1, hd/2)."""
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)
        q, k = apply_rope(qkv[:, :, :2], *rotations).unbind(2)  # 2 × (B, T, H, hd), one kernel
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


class Block(nn.Module):
    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.ffn_hidden)

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
        window = self.config.window
        if doc_ids is not None:
            if cache is not None:
                raise ValueError("doc_ids (packed training sequences) and cache (incremental scoring) exclude each other")
            positions, layout = packed_positions_and_layout(doc_ids, window, use_local_blocks(T, 0, window))
            rotations = self.rope(positions.unsqueeze(2))  # broadcast over q/k and heads
        else:
            past = 0 if cache is None else cache.length
            if cache is not None and past and cache.end != start_pos:
                raise ValueError(f"cache ends at position {cache.end} but the chunk starts at {start_pos}")
            positions = torch.arange(start_pos, start_pos + T, device=tokens.device)
            rotations = self.rope(positions.unsqueeze(1))
            layout = window_layout(start_pos, T, past, window, tokens.device, use_local_blocks(T, past, window))
        h = self.embed(tokens)  # (B, T, dim)
        for layer, block in enumerate(self.blocks):
            h = block(h, rotations, layout, cache, layer)
        if cache is not None:
            cache.end = start_pos + T
        return self.output(self.final_norm(h))  # (B, T, vocab)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables for absolute ``positions``, angles in float64 (far positions keep their precision)."""
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta, exact=True)
        return cos.unsqueeze(-2), sin.unsqueeze(-2)  # (..., 1, hd/2): broadcast over heads


def local_attention(q, k, v, layout: AttentionLayout, window: int) -> torch.Tensor:
    """Sliding-window attention computed block by block: cost ∝ T · (block + window), not T².

    q: (B, H, T, hd); k, v: (B, H, past + T, hd) with past ≤ window - 1 (see
    :func:`~bltdata.nn.attention.blockwise_attention`). When every key slot a real query can see holds a real key —
    a full cache, or no cache once the first block is set aside — all blocks share one band
    mask, which SDPA broadcasts (:func:`banded_attention`); otherwise (packed documents, a
    short cache) each block gets its own mask.
    """
    block, past = layout.block, k.shape[2] - q.shape[2]
    if layout.mask.dim() == 3 and block == window:
        if past == window - 1:
            return banded_attention(q, k, v, block, layout.band_bias(q.dtype))
        if past == 0:  # block 0 would reach before position 0: plain causal attention over itself
            first = F.scaled_dot_product_attention(q[:, :, :block], k[:, :, :block], v[:, :, :block], is_causal=True)
            rest = banded_attention(q[:, :, block:], k[:, :, 1:], v[:, :, 1:], block, layout.band_bias(q.dtype))
            return torch.cat((first, rest), dim=2)
    return blockwise_attention(q, k, v, block, window, layout.local_bias(q.shape[0], q.dtype))
