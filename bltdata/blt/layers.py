"""Transformer building blocks shared by the BLT stacks and the byte-level baseline.

Pre-norm blocks (RMSNorm), rotary position embeddings, SwiGLU feed-forward. Attention
layers own their projections; *which* keys each query sees is an ``attend(q, k, v)``
function from `attention.py` (SDPA with a boolean mask, or a sparse equivalent), so the
same blocks serve the byte layers, the patch layers and both cross-attentions, on CPU and
GPU without extra kernels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bltdata.blt.attention import Attend
from bltdata.blt.config import swiglu_hidden


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, head_dim/2) for integer positions (T,)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by the tables (pairs of adjacent features form the complex plane)."""
    x_pairs = x.float().unflatten(-1, (-1, 2))  # (B, H, T, D/2, 2)
    real, imag = x_pairs[..., 0], x_pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


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


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + SwiGLU block (SwiGLU width rounded up to ``ffn_multiple_of``)."""

    def __init__(self, dim: int, n_heads: int, norm_eps: float, ffn_multiple_of: int = 64):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, n_heads)
        self.ffn_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.ffn = SwiGLU(dim, swiglu_hidden(dim, ffn_multiple_of))

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
        self.query_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.context_norm = nn.RMSNorm(dim, eps=norm_eps)
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
