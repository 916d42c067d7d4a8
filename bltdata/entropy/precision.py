"""The entropy model converted for a numeric precision: ``fp32``, ``bf16`` or ``int8``.

What each precision computes (the model's code is the same; only its weights change):

- ``fp32`` — the model as it is.
- ``bf16`` — the projections of every block (qkv, attention output, SwiGLU) and the block
  norms' gains in bfloat16, so the matrix multiplies and attention run on the CPU's bf16
  units (AVX512-BF16/AMX) or CUDA tensor cores. The residual stream, the token embedding,
  RMSNorm's arithmetic, the RoPE rotation, the final norm, the 260-way output projection and
  the entropy stay in float32: the logits are not rounded to bf16.
- ``int8`` — every block projection becomes an :class:`Int8Linear`: weights quantised
  symmetrically per output channel, activations quantised symmetrically *per row* (one scale
  per position) when the layer runs, the product accumulated exactly in int32
  (``torch._int_mm``: VNNI on x86). Everything else runs in float32: on this project's CPU
  that measured faster than running it in bf16 (torch's CPU attention kernel is no faster in
  bf16, and the casts cost) and closer to fp32 (max |ΔH| 0.32 against 0.47 nats), and it
  makes int8 compute the same thing on every CPU.

Both keep docs/design.md §2: a position's result depends on its own row only. ``torch.ao``'s
``quantize_dynamic`` is not used: it takes one activation scale over the whole input
tensor, i.e. over every document of the batch, so a document's entropies would change with
its batch mates (measured in ``tests/test_entropy_precision.py``).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from bltdata.entropy.model import EntropyModel

logger = logging.getLogger(__name__)


class Int8Linear(nn.Module):
    """``x @ W.T`` with int8 weights (per output channel) and int8 activations (per row)."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype = torch.float32):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear takes bias-free projections only")
        weight = linear.weight.detach().float()  # (N, K)
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())  # (K, N)
        self.register_buffer("weight_scale", scale)
        self.in_features, self.out_features, self.out_dtype = weight.shape[1], weight.shape[0], out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        x_int8, x_scale = quantize_rows(rows)
        if rows.shape[0] <= 16:  # _int_mm wants more than 16 rows; exact int32 products either way
            acc = (x_int8.to(torch.int32) @ self.weight_t.to(torch.int32))
        else:
            acc = torch._int_mm(x_int8, self.weight_t)  # (M, N) int32, exact
        out = acc.to(torch.float32).mul_(x_scale).mul_(self.weight_scale)
        return out.to(self.out_dtype).view(*x.shape[:-1], self.out_features)


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantisation of a (M, K) tensor with one scale per row: (int8 (M, K), scale (M, 1))."""
    rows = rows.float()
    scale = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(127.0)  # (faster than vector_norm(inf))
    return rows.mul(scale.reciprocal()).round_().to(torch.int8), scale


def convert_model(model: EntropyModel, precision: str, *, device: torch.device | str = "cpu") -> EntropyModel:
    """The model to run in ``precision`` (a converted copy; fp32 returns ``model`` itself)."""
    if precision == "fp32":
        return model
    if precision not in ("bf16", "int8"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32, bf16 or int8")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError("int8 entropy scoring runs on the CPU only (torch._int_mm); use bf16 on CUDA")
    converted = copy.deepcopy(model).float()
    for block in converted.blocks:
        if precision == "bf16":
            for module in (block.attn_norm, block.mlp_norm, block.attn, block.mlp):
                module.to(torch.bfloat16)
            continue
        block.attn.qkv, block.attn.proj = Int8Linear(block.attn.qkv), Int8Linear(block.attn.proj)
        block.mlp.gate_up, block.mlp.down = Int8Linear(block.mlp.gate_up), Int8Linear(block.mlp.down)
    return converted.eval()
