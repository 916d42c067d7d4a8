"""Rotary position embeddings in the interleaved pair layout of both models' checkpoints.

Dimensions ``2j`` and ``2j + 1`` of a head are rotated together by ``pos · θ^(-2j/head_dim)``
(the reference layout, so imported weights need no permutation). The two models differ only
in how the angles are formed, a parameter here:

- ``exact=True`` (the entropy model): in float64 from absolute positions, then cast, so
  positions far beyond the training length keep their precision and chunked scoring equals
  unchunked scoring;
- ``exact=False`` (the BLT): in float32, as its weights were trained (and as transformers
  computes them).
"""
from __future__ import annotations

import torch


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, *,
                exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin tables, ``positions.shape + (head_dim/2,)``, for integer ``positions``."""
    if exact:
        steps = torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device)
        angles = positions.to(torch.float64).unsqueeze(-1) * theta ** (-steps / head_dim)
        return angles.cos().float(), angles.sin().float()
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float().unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs ``(x[..., 2j], x[..., 2j+1])`` of ``x``; the tables broadcast to
    ``x.shape[:-1] + (head_dim/2,)``. Computed in float32, returned in ``x``'s dtype."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., hd/2, 2)
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2).type_as(x)
