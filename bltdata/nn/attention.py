"""Sliding-window causal attention: masks and block-local SDPA kernels.

Position ``p`` attends to keys ``p - window + 1 .. p`` (itself included). A dense (T, T)
mask costs T²; the block-local kernels instead cut the queries into blocks of ``block``
positions and give each block only its own span of ``block + window - 1`` keys, so the cost
grows as T · window. Blocks are folded into the batch axis, so SDPA sees ordinary 4-d
inputs and one mask per (row, block) broadcasts over the heads.

Masks are boolean (True = may attend); :func:`additive` turns one into the 0 / -inf bias SDPA
would build from it, for callers that reuse a bias across layers (:class:`AttentionLayout`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``mask`` allows attention, -inf where it forbids it (what SDPA does to a bool mask)."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.full((), float("-inf"), dtype=dtype, device=mask.device))


def window_mask(start_pos: int, q_len: int, past: int, window: int | None, device) -> torch.Tensor:
    """Boolean (q_len, past + q_len) mask: query at p sees keys at p - window + 1 .. p (``None``: all of 0 .. p)."""
    q_pos = torch.arange(start_pos, start_pos + q_len, device=device).unsqueeze(1)
    k_pos = torch.arange(start_pos - past, start_pos + q_len, device=device).unsqueeze(0)
    allowed = k_pos <= q_pos
    return allowed if window is None else allowed & (q_pos - k_pos < window)


def document_window_mask(doc_ids: torch.Tensor, window: int | None) -> torch.Tensor:
    """(B, 1, T, T) mask of rows packing documents: causal, within ``window``, same document."""
    same_doc = doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1)
    return (same_doc & window_mask(0, doc_ids.shape[1], 0, window, doc_ids.device)).unsqueeze(1)


def local_window_mask(start_pos: int, q_len: int, past: int, window: int, device) -> torch.Tensor:
    """(n_blocks, window, 2·window - 1) mask of :func:`blockwise_attention` with block = window.

    Key slot c of block j is position start_pos - (window - 1) + j·window + c; slots before
    the cached keys (a short cache) are padding and never seen.
    """
    block, span = window, 2 * window - 1
    n_blocks = -(-q_len // block)
    j = torch.arange(n_blocks, device=device).view(-1, 1, 1) * block
    q_pos = start_pos + j + torch.arange(block, device=device).view(1, -1, 1)
    k_pos = start_pos - (window - 1) + j + torch.arange(span, device=device).view(1, 1, -1)
    return (k_pos <= q_pos) & (q_pos - k_pos < window) & (k_pos >= start_pos - past)


def document_local_mask(doc_ids: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 1, n_blocks, window, 2·window - 1) block-local mask of rows packing documents.

    :func:`local_window_mask` (from position 0, no cache) within each document; padding
    queries (past the row's end) see padding keys only, so no row of the mask is empty.
    """
    B, T = doc_ids.shape
    n_blocks = -(-T // window)
    pad = n_blocks * window - T
    k_doc = F.pad(doc_ids, (window - 1, pad), value=-1).unfold(1, 2 * window - 1, window)  # (B, nb, span)
    q_doc = F.pad(doc_ids, (0, pad), value=-1).view(B, n_blocks, window)
    same_doc = q_doc.unsqueeze(-1) == k_doc.unsqueeze(-2)  # (B, nb, block, span)
    return (local_window_mask(0, T, 0, window, doc_ids.device) & same_doc).unsqueeze(1)


def band_mask(block: int, device) -> torch.Tensor:
    """(block, 2·block - 1) band of :func:`banded_attention`: query r sees key slots r .. r + block - 1."""
    r = torch.arange(block, device=device).unsqueeze(1)
    c = torch.arange(2 * block - 1, device=device).unsqueeze(0)
    return (c >= r) & (c < r + block)


def fold_blocks(mask: torch.Tensor, batch: int) -> torch.Tensor:
    """A block-local mask in the layout :func:`blockwise_attention` hands SDPA, (B · nb or 1, 1, block, span).

    ``mask`` is (block, span) for all blocks, (n_blocks, block, span) for all rows,
    (B, 1, n_blocks, block, span) per row, or already folded (4-d, returned as it is).
    """
    if mask.dim() == 5:
        b, _, n_blocks, block, span = mask.shape
        return mask.expand(batch, 1, n_blocks, block, span).transpose(1, 2).reshape(batch * n_blocks, 1, block, span)
    if mask.dim() == 3:
        return mask.unsqueeze(1).repeat(batch, 1, 1, 1)
    return mask


def blockwise_attention(q, k, v, block: int, window: int, mask: torch.Tensor) -> torch.Tensor:
    """SDPA of each block of ``block`` queries against its own span of ``block + window - 1`` keys.

    q: (B, H, T, hd); k, v: (B, H, past + T, hd) with past ≤ window - 1. Queries are padded
    to whole blocks and keys on both sides so that block j's keys are one contiguous span
    (slot c is position start - (window - 1) + j·block + c). ``mask`` (bool or additive) is
    any layout :func:`fold_blocks` takes.
    """
    B, H, T, hd = q.shape
    past = k.shape[2] - T
    n_blocks = -(-T // block)
    pad = n_blocks * block - T
    span = block + window - 1

    def spans(x):  # (B, H, past + T, hd) -> (B · nb, H, span, hd)
        x = F.pad(x, (0, 0, window - 1 - past, pad)).unfold(2, span, block)  # (B, H, nb, hd, span)
        return x.permute(0, 2, 1, 4, 3).reshape(B * n_blocks, H, span, hd)

    q = F.pad(q, (0, 0, 0, pad)).view(B, H, n_blocks, block, hd).transpose(1, 2).reshape(B * n_blocks, H, block, hd)
    out = F.scaled_dot_product_attention(q, spans(k), spans(v), attn_mask=fold_blocks(mask, B))
    return out.view(B, n_blocks, H, block, hd).transpose(1, 2).reshape(B, H, n_blocks * block, hd)[:, :, :T]


def banded_attention(q, k, v, block: int, mask: torch.Tensor) -> torch.Tensor:
    """Block-local attention where block j of queries sees key slots ``j·block .. j·block + 2·block - 2``.

    q: (B, H, T, hd); k, v: (B, H, block - 1 + T, hd), every slot a real key (block = window).
    Query r of a block sees slots r .. r + block - 1 (the last one is itself), the same band
    in every block, so one (block, 2·block - 1) ``mask`` (:func:`band_mask`) serves the whole
    batch; slots past the end (right padding) are beyond every real query and never seen by one.
    """
    T = q.shape[2]
    if k.shape[2] != block - 1 + T:
        raise ValueError(f"banded attention needs {block - 1 + T} keys for {T} queries, got {k.shape[2]}")
    return blockwise_attention(q, k, v, block, block, mask)
