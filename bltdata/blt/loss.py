"""The next-byte objective: how a loader batch becomes model input and targets, and BPB.

A loader batch holds ``tokens`` (B, L), ``patch_lengths`` (B, P) covering all L tokens and
``doc_ids`` (B, L). The model reads ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]``.
Patches are aligned with the input: the input is the first L-1 tokens, so the row's last
patch loses its last token (a patch of length 1 becomes an empty padding patch).

Which targets count (in the loss and in bits per byte): every byte and every EOS (as in
the reference BLT, EOS counts as a byte); a BOS target (the jump from one document to the
next inside a packed row) and padding (id 0) are not predicted. Bits per byte =
Σ cross-entropy in nats over counted targets / ln 2 / number of counted targets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bltdata.ids import BOS_ID, PAD_ID


@dataclass
class ModelInputs:
    tokens: torch.Tensor  # (B, T) int64, T = L - 1
    patch_lengths: torch.Tensor  # (B, P) int64, rows sum to T
    doc_ids: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64


def trim_last_patch(patch_lengths: torch.Tensor) -> torch.Tensor:
    """Patch lengths of the input: the last non-empty patch of every row shortened by one."""
    nonzero = patch_lengths > 0
    if not bool(nonzero.any(dim=1).all()):
        raise ValueError("every row of patch_lengths needs at least one non-empty patch")
    n_patches = patch_lengths.shape[1]
    last = n_patches - 1 - nonzero.flip(1).int().argmax(dim=1)  # (B,)
    trimmed = patch_lengths.clone()
    trimmed[torch.arange(len(last)), last] -= 1
    return trimmed


def split_batch(batch: dict, device: torch.device | str = "cpu") -> ModelInputs:
    """Model inputs and targets of a loader batch (checked, then moved to ``device``)."""
    tokens = torch.as_tensor(batch["tokens"], dtype=torch.int64)
    patch_lengths = torch.as_tensor(batch["patch_lengths"], dtype=torch.int64)
    doc_ids = batch.get("doc_ids")
    doc_ids = torch.zeros_like(tokens) if doc_ids is None else torch.as_tensor(doc_ids, dtype=torch.int64)
    sums = patch_lengths.sum(dim=1)
    if not bool((sums == tokens.shape[1]).all()):
        bad = int((sums != tokens.shape[1]).nonzero()[0, 0])
        raise ValueError(f"batch row {bad}: patch lengths sum to {int(sums[bad])}, expected {tokens.shape[1]}")
    inputs = ModelInputs(tokens[:, :-1], trim_last_patch(patch_lengths), doc_ids[:, :-1], tokens[:, 1:])
    return ModelInputs(*(t.to(device, non_blocking=True) for t in vars(inputs).values()))


def target_mask(targets: torch.Tensor) -> torch.Tensor:
    """Targets that count: bytes and EOS (not BOS, not padding)."""
    return (targets != PAD_ID) & (targets != BOS_ID)


def loss_sums(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ cross-entropy in nats, number of counted targets) for logits (B, T, V)."""
    nats = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    mask = target_mask(targets).flatten()
    return (nats * mask).sum(), mask.sum()


def bits_per_byte(nats: float, count: int) -> float:
    return nats / math.log(2) / count if count else float("nan")


def forward_sums(model: torch.nn.Module, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(inputs.tokens, inputs.patch_lengths, inputs.doc_ids)
    return loss_sums(logits, inputs.targets)
