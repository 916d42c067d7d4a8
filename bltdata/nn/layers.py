"""Normalisation and feed-forward layers of both transformers (pre-norm blocks, Llama style)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bltdata.nn.sizes import swiglu_hidden

__all__ = ["RMSNorm", "SwiGLU", "swiglu_hidden"]


class RMSNorm(nn.RMSNorm):
    """Root-mean-square norm with a learned gain (state-dict key ``weight``).

    ``upcast=True`` (the entropy model): computed in float32 whatever the input, the result in
    the gain's dtype (a bf16 gain feeds bf16 projections, a float32 one keeps float32).
    ``upcast=False`` (the BLT): exactly :class:`torch.nn.RMSNorm`, in the input's dtype under
    autocast.
    """

    def __init__(self, dim: int, eps: float, *, upcast: bool = True):
        super().__init__(dim, eps=eps)
        self.upcast = upcast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.upcast:
            return super().forward(x)
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(self.weight.dtype)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with gate and up fused in one projection.

    ``prefix`` names the projections (``{prefix}gate_up``, ``{prefix}down``): the entropy
    model's checkpoints use none, the BLT's ``w_``; the computation is the same.
    """

    def __init__(self, dim: int, hidden: int, *, prefix: str = ""):
        super().__init__()
        self._names = (f"{prefix}gate_up", f"{prefix}down")
        setattr(self, self._names[0], nn.Linear(dim, 2 * hidden, bias=False))
        setattr(self, self._names[1], nn.Linear(hidden, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, down = (getattr(self, name) for name in self._names)
        gate, up = gate_up(x).chunk(2, dim=-1)
        return down(F.silu(gate) * up)
