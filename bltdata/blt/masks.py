"""Patch layouts and the boolean attention masks of the BLT (True = may attend).

A batch row holds T byte positions cut into P patches by ``patch_lengths`` (B, P), zero
padded on the right, each row summing to T. From it we derive, per row:

- ``patch_ids`` (B, T): the patch holding each byte;
- ``patch_docs`` (B, P): the document of each patch (of its first byte), -1 for empty
  (padding) patches;
- the masks below. Every query row has at least one True key, so SDPA never returns NaN;
  rows of padding patches are given a harmless key and their outputs are never used.

Masks have shape (B, 1, queries, keys) and broadcast over heads.
"""
from __future__ import annotations

import torch

from bltdata.nn.attention import document_window_mask as local_mask  # byte self-attention: causal, window, same document


def patch_ids_from_lengths(patch_lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Index of the patch containing each of the ``seq_len`` bytes, (B, T) int64."""
    ends = patch_lengths.cumsum(dim=1)  # (B, P), non-decreasing
    positions = torch.arange(seq_len, device=patch_lengths.device).expand(patch_lengths.shape[0], -1)
    return torch.searchsorted(ends.contiguous(), positions.contiguous(), right=True)


def patch_documents(patch_lengths: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """Document id of each patch's first byte, (B, P); -1 for empty patches."""
    starts = (patch_lengths.cumsum(dim=1) - patch_lengths).clamp(max=doc_ids.shape[1] - 1)
    docs = doc_ids.gather(1, starts)
    return docs.masked_fill(patch_lengths == 0, -1)


def global_mask(patch_docs: torch.Tensor) -> torch.Tensor:
    """Patch self-attention: causal over patches, same document; padding patches see themselves."""
    n_patches = patch_docs.shape[1]
    idx = torch.arange(n_patches, device=patch_docs.device)
    causal = idx[:, None] >= idx[None, :]
    same_doc = (patch_docs[:, :, None] == patch_docs[:, None, :]) & (patch_docs[:, None, :] >= 0)
    own = torch.eye(n_patches, dtype=torch.bool, device=patch_docs.device)
    return ((causal[None] & same_doc) | own[None]).unsqueeze(1)


def encoder_cross_mask(patch_ids: torch.Tensor, patch_lengths: torch.Tensor, k: int) -> torch.Tensor:
    """Patch queries (P*k, patch-major) attend only to the bytes of their own patch.

    An empty patch's queries may see every byte (their output is discarded).
    """
    n_patches = patch_lengths.shape[1]
    idx = torch.arange(n_patches, device=patch_ids.device)
    own = patch_ids[:, None, :] == idx[None, :, None]  # (B, P, T)
    own = own | (patch_lengths == 0)[:, :, None]
    return own.repeat_interleave(k, dim=1).unsqueeze(1)  # (B, 1, P*k, T)


def decoder_source_patches(patch_ids: torch.Tensor, patch_docs: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """For each byte, the index into ``[start] + global_states`` it reads, (B, T).

    A byte of patch j reads the global state of patch j-1 (index j) when that patch is in
    the byte's document; otherwise (the row's first patch, a document's BOS patch) it reads
    the learned start state (index 0). Patch j-1 ends before the byte: no future leaks.
    """
    previous = (patch_ids - 1).clamp(min=0)
    previous_doc = patch_docs.gather(1, previous)
    has_previous = (patch_ids >= 1) & (previous_doc == doc_ids)
    return torch.where(has_previous, patch_ids, torch.zeros_like(patch_ids))


def decoder_next_byte_sources(patch_ids: torch.Tensor, patch_docs: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """The reference's choice, as an index into ``[start] + global_states``, (B, T).

    Byte t (predicting byte t+1) reads patch(t+1) − 1: at a patch-final byte its own patch
    (causal, because byte t+1 opens a new patch), elsewhere the previous one. The row's last
    byte has no next byte in the row and reads as if its patch went on (patch(t) − 1), as
    transformers' BltModel does. A source outside the byte's document, or before the row's
    first patch, gives the start state (index 0).
    """
    following = torch.cat([patch_ids[:, 1:], patch_ids[:, -1:]], dim=1)
    source = following - 1
    source_doc = patch_docs.gather(1, source.clamp(min=0))
    valid = (source >= 0) & (source_doc == doc_ids)
    return torch.where(valid, source + 1, torch.zeros_like(source))


def decoder_window_mask(sources: torch.Tensor, patch_docs: torch.Tensor, doc_ids: torch.Tensor,
                        window: int, k: int) -> torch.Tensor:
    """Bytes attend to the states of the last ``window`` patches up to their source, same document.

    ``sources`` index ``[start] + global_states``; a byte with source 0 sees the start state
    only. Shape (B, 1, T, (P+1)*k); window 1 equals :func:`decoder_cross_mask`.
    """
    n_states = patch_docs.shape[1] + 1
    state = torch.arange(n_states, device=sources.device)
    state_docs = torch.cat([torch.full_like(patch_docs[:, :1], -2), patch_docs], dim=1)  # (B, P+1)
    in_window = (state > sources[..., None] - window) & (state <= sources[..., None]) & (state >= 1)
    allowed = in_window & (state_docs[:, None, :] == doc_ids[..., None])
    allowed = allowed | ((sources == 0)[..., None] & (state == 0))
    return allowed.repeat_interleave(k, dim=-1).unsqueeze(1)


def encoder_window_mask(patch_ids: torch.Tensor, patch_lengths: torch.Tensor, patch_docs: torch.Tensor,
                        doc_ids: torch.Tensor, window: int, k: int) -> torch.Tensor:
    """Patch queries attend to the bytes of the last ``window`` patches (their own included) of
    their document, (B, 1, P*k, T); window 1 equals :func:`encoder_cross_mask`."""
    idx = torch.arange(patch_lengths.shape[1], device=patch_ids.device)[None, :, None]  # (1, P, 1)
    byte_patch = patch_ids[:, None, :]  # (B, 1, T)
    allowed = (byte_patch <= idx) & (byte_patch > idx - window) & (doc_ids[:, None, :] == patch_docs[:, :, None])
    allowed = allowed | (patch_lengths == 0)[:, :, None]
    return allowed.repeat_interleave(k, dim=1).unsqueeze(1)


def decoder_cross_mask(sources: torch.Tensor, n_patches: int, k: int) -> torch.Tensor:
    """Bytes attend to the k key/value tokens of their source state, (B, 1, T, (P+1)*k)."""
    idx = torch.arange(n_patches + 1, device=sources.device).repeat_interleave(k)
    return (sources[:, :, None] == idx[None, None, :]).unsqueeze(1)
