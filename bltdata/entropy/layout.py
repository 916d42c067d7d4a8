"""How one forward pass of the entropy model attends: plain causal, one dense mask, or block-local.

Plain causal attention when no key can be out of the window; one dense boolean mask for
short sequences; and, once a query would face three windows of keys or more, *block-local*
(:mod:`bltdata.nn.attention`): queries in blocks of ``window`` positions, each against its
own ``2·window - 1`` keys, so the cost grows as T·window instead of T². The layout is built
once per forward and its additive biases are cached for every layer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bltdata.nn.attention import (
    additive,
    band_mask,
    document_local_mask,
    document_window_mask,
    fold_blocks,
    local_window_mask,
    window_mask,
)


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

    def _cached(self, key, build):
        if key not in self._biases:
            self._biases[key] = build()
        return self._biases[key]

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The dense mask as an additive bias (0 / -inf) in ``dtype``, built once per forward.

        SDPA turns a boolean mask into exactly this bias on every call; building it once
        saves that work in every layer after the first.
        """
        if self.mask is None:
            return None
        return self._cached(dtype, lambda: additive(self.mask, dtype))

    def band_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The (block, 2·block - 1) band of :func:`~bltdata.nn.attention.banded_attention` as a bias."""
        return self._cached(("band", dtype), lambda: additive(band_mask(self.block, self.mask.device), dtype))

    def local_bias(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The local mask as a bias folded for :func:`~bltdata.nn.attention.blockwise_attention`."""
        return self._cached(("local", batch, dtype), lambda: additive(fold_blocks(self.mask, batch), dtype))


def use_local_blocks(q_len: int, past: int, window: int) -> bool:
    """Local blocks pay off once a query would see many more keys than the window."""
    return q_len + past >= 3 * window


def window_layout(start_pos: int, q_len: int, past: int, window: int, device,
                  local: bool | None = None) -> AttentionLayout:
    """Sliding-window causal attention for queries at start_pos.. over ``past`` cached keys
    (``local``: block-local or dense; by default :func:`use_local_blocks` decides)."""
    if past == 0 and q_len <= window:
        return AttentionLayout(None, causal=True)
    if use_local_blocks(q_len, past, window) if local is None else local:
        return AttentionLayout(local_window_mask(start_pos, q_len, past, window, device), block=window)
    return AttentionLayout(window_mask(start_pos, q_len, past, window, device))


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) position of every token counted from its document's first token in the row.

    ``doc_ids`` numbers the documents of each row in non-decreasing order.
    """
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts_here = torch.ones_like(doc_ids, dtype=torch.bool)
    starts_here[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    doc_start = torch.cummax(torch.where(starts_here, idx, torch.zeros_like(idx)), dim=1).values
    return idx - doc_start


def packed_positions_and_layout(doc_ids: torch.Tensor, window: int,
                                local: bool | None = None) -> tuple[torch.Tensor, AttentionLayout]:
    """Per-document positions (B, T) and the attention layout of rows packing several documents.

    A position's RoPE index counts from its document's first token in the row, and attention
    stays inside the document (``local`` as in :func:`window_layout`).
    """
    positions = document_positions(doc_ids)
    if not (use_local_blocks(doc_ids.shape[1], 0, window) if local is None else local):
        return positions, AttentionLayout(document_window_mask(doc_ids, window))
    return positions, AttentionLayout(document_local_mask(doc_ids, window), block=window)
