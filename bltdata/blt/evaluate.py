"""Held-out bits per byte of a model over a stream of loader batches.

BPB = Σ cross-entropy (nats) over counted targets / ln 2 / number of counted targets;
counted targets are bytes and EOS (EOS counts as a byte, as in the reference BLT), never
BOS or padding — see `loss.py`. Under DDP every rank evaluates its own batches and the
sums are added over ranks before dividing.
"""
from __future__ import annotations

import itertools
from typing import Iterable

import torch

from bltdata.blt.distributed import autocast
from bltdata.blt.loss import bits_per_byte, forward_sums, split_batch


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[dict], device: str | torch.device = "cpu",
             max_batches: int | None = None, *, world_size: int = 1) -> dict:
    """{"bpb", "nats", "bytes", "batches"} over up to ``max_batches`` batches (all if None)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, bytes, batches
    for batch in itertools.islice(batches, max_batches):
        inputs = split_batch(batch, device)
        with autocast(str(device)):
            nats, count = forward_sums(model, inputs)
        sums += torch.stack([nats.double(), count.double(), torch.ones((), dtype=torch.float64, device=device)])
    if world_size > 1:
        torch.distributed.all_reduce(sums)
    model.train(was_training)
    nats, count, n_batches = sums.tolist()
    return {"bpb": bits_per_byte(nats, int(count)), "nats": nats, "bytes": int(count), "batches": int(n_batches)}
