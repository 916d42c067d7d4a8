"""Attention patterns of the BLT, each computed at the cost its sparsity allows.

Every function takes q (B, H, Q, D) and k, v (B, H, S, D) and returns (B, H, Q, D); each is
exactly the masked softmax attention of the corresponding mask in `masks.py` (the tests
check this against SDPA with that mask), but without materialising a dense Q × S score
matrix where most of it would be masked:

- ``masked``: SDPA with an explicit boolean mask (the global transformer; any pattern);
- ``sliding_window``: causal, same document, the last ``window`` positions — SDPA over
  blocks of ``window`` queries against their own span of 2W - 1 keys (the shared kernel of
  :mod:`bltdata.nn.attention`): O(T · 2W) instead of O(T²);
- ``pool_into_patches``: the encoder's patch queries, each attending to the bytes of its
  own patch — a softmax over segments with scatter/gather, O(T · k);
- ``read_source_patch``: the decoder's bytes, each attending to the k tokens of one
  patch state — a gather, O(T · k).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from bltdata.blt import masks
from bltdata.nn.attention import blockwise_attention, document_local_mask, fold_blocks

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def masked(mask: torch.Tensor) -> Attend:
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sliding_window(doc_ids: torch.Tensor, window: int | None) -> Attend:
    """Causal attention over the last ``window`` keys (self included) of the same document.

    Rows longer than two windows attend block by block (:func:`bltdata.nn.attention.blockwise_attention`);
    the mask is built once, for every layer that uses the pattern.
    """
    if window is None or 2 * window >= doc_ids.shape[1]:
        return masked(masks.local_mask(doc_ids, window))
    mask = fold_blocks(document_local_mask(doc_ids, window), doc_ids.shape[0])  # (B · nb, 1, W, 2W - 1)
    return lambda q, k, v: blockwise_attention(q, k, v, window, window, mask)


def pool_into_patches(patch_ids: torch.Tensor, n_patches: int, k: int) -> Attend:
    """Queries (P*k, patch-major) attend to the bytes of their own patch; empty patches give 0."""

    def attend(q, keys, values):
        batch, heads, _, dim = q.shape
        q = q.view(batch, heads, n_patches, k, dim)
        idx = patch_ids.clamp(max=n_patches - 1)  # (B, T)
        q_of_byte = q.gather(2, idx[:, None, :, None, None].expand(-1, heads, -1, k, dim))  # (B, H, T, k, D)
        scores = torch.einsum("bhtkd,bhtd->bhtk", q_of_byte, keys) / math.sqrt(dim)
        scatter_idx = idx[:, None, :, None].expand(-1, heads, -1, k)  # (B, H, T, k)
        peak = scores.new_full((batch, heads, n_patches, k), float("-inf"))
        peak = peak.scatter_reduce(2, scatter_idx, scores.detach(), reduce="amax", include_self=True)
        weights = torch.exp(scores - peak.gather(2, scatter_idx))
        total = weights.new_zeros(batch, heads, n_patches, k).scatter_add(2, scatter_idx, weights)
        weights = weights / total.gather(2, scatter_idx)
        out = q.new_zeros(batch, heads, n_patches, k, dim)
        contrib = weights[..., None] * values[:, :, :, None, :]  # (B, H, T, k, D)
        out = out.scatter_add(2, scatter_idx[..., None].expand(-1, -1, -1, -1, dim), contrib)
        return out.view(batch, heads, n_patches * k, dim)

    return attend


def read_source_patch(sources: torch.Tensor, k: int) -> Attend:
    """Byte t attends to the k tokens of state ``sources[t]`` (keys laid out state-major)."""

    def attend(q, keys, values):
        batch, heads, seq_len, dim = q.shape
        idx = sources[:, None, :, None, None].expand(-1, heads, -1, k, dim)  # (B, H, T, k, D)
        keys = keys.view(batch, heads, -1, k, dim).gather(2, idx)
        values = values.view(batch, heads, -1, k, dim).gather(2, idx)
        weights = torch.einsum("bhtd,bhtkd->bhtk", q, keys).div(math.sqrt(dim)).softmax(dim=-1)
        return torch.einsum("bhtk,bhtkd->bhtd", weights, values)

    return attend
