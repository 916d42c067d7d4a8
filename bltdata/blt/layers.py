"""Transformer building blocks shared by the BLT stacks and the byte-level baseline.

Pre-norm blocks of the shared parts (:mod:`bltdata.nn`: RMSNorm in the input's dtype, RoPE
with float32 angles, SwiGLU named ``w_gate_up``/``w_down``). Attention
layers own their projections; *which* keys each query sees is an ``attend(q, k, v)``
function from `attention.py` (SDPA with a boolean mask, or a sparse equivalent), so the
same blocks serve the byte layers, the patch layers and both cross-attentions, on CPU and
GPU without extra kernels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bltdata.blt.attention import Attend
from bltdata.nn.layers import RMSNorm, SwiGLU
from bltdata.nn.rope import apply_rope, rope_tables
from bltdata.nn.sizes import swiglu_hidden


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, attend: Attend, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = self.wqkv(x).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)  # 3 × (B, H, T, D)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attend(q, k, v)  # (B, H, T, D)
        return self.wo(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    """Queries from one sequence attend to keys/values of another (no positions)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, attend: Attend) -> torch.Tensor:
        q = self.wq(queries).unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # (B, H, Q, D)
        k, v = self.wkv(context).unflatten(-1, (2, self.n_heads, -1)).permute(2, 0, 3, 1, 4)  # 2 × (B, H, S, D)
        out = attend(q, k, v)
        return self.wo(out.transpose(1, 2).flatten(2))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + SwiGLU block (SwiGLU width rounded up to ``ffn_multiple_of``)."""

    def __init__(self, dim: int, n_heads: int, norm_eps: float, ffn_multiple_of: int = 64):
        super().__init__()
        self.attn_norm = RMSNorm(dim, norm_eps, upcast=False)
        self.attn = SelfAttention(dim, n_heads)
        self.ffn_norm = RMSNorm(dim, norm_eps, upcast=False)
        self.ffn = SwiGLU(dim, swiglu_hidden(dim, ffn_multiple_of), prefix="w_")

    def forward(self, x: torch.Tensor, attend: Attend, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), attend, rope)
        return x + self.ffn(self.ffn_norm(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention with a residual on the queries.

    ``double_residual``: 2·queries + out, as the reference BLT computes it (its attention
    returns queries + out and its caller adds the queries again).
    """

    def __init__(self, dim: int, n_heads: int, norm_eps: float, double_residual: bool = False):
        super().__init__()
        self.double_residual = double_residual
        self.query_norm = RMSNorm(dim, norm_eps, upcast=False)
        self.context_norm = RMSNorm(dim, norm_eps, upcast=False)
        self.attn = CrossAttention(dim, n_heads)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, attend: Attend) -> torch.Tensor:
        out = self.attn(self.query_norm(queries), self.context_norm(context), attend)
        return (queries + out) + queries if self.double_residual else queries + out


class Stack(nn.Module):
    """``n_layers`` transformer blocks sharing one attention pattern and one RoPE table."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, norm_eps: float, rope_theta: float,
                 ffn_multiple_of: int = 64):
        super().__init__()
        self.head_dim = dim // n_heads
        self.rope_theta = rope_theta
        self.layers = nn.ModuleList(TransformerBlock(dim, n_heads, norm_eps, ffn_multiple_of) for _ in range(n_layers))

    def rope(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_tables(torch.arange(length, device=device), self.head_dim, self.rope_theta)

    def forward(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        rope = self.rope(x.shape[1], x.device)
        for layer in self.layers:
            x = layer(x, attend, rope)
        return x


def init_weights(module: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """Normal(0, std) weights; residual output projections scaled by 1/sqrt(2 * n_layers)."""
    for name, param in module.named_parameters():
        if param.dim() < 2:
            continue  # norms keep their ones
        scale = 1.0 / math.sqrt(2 * max(n_layers, 1)) if name.endswith(("wo.weight", "w_down.weight")) else 1.0
        nn.init.normal_(param, mean=0.0, std=std * scale)
