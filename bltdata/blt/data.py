"""Glue between the shard loader (`bltdata.data`) and BLT training / evaluation.

Training reads an endless, shuffled, resumable stream (``ResumableLoader`` over a
``PatchedDataset``, one slot per rank); evaluation reads a held-out manifest once, in
manifest order, every token exactly once, with the same number of batches on every rank. The manifests also tell
the FLOP accounting the mean patch length and tell generation how the data was patched.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

from bltdata.blt.distributed import Runtime

log = logging.getLogger(__name__)


def parse_source(spec: str) -> tuple[str, float]:
    """``DIR`` or ``DIR=WEIGHT`` (mixing weight by bytes; default 1)."""
    path, sep, weight = spec.rpartition("=")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def train_loader(sources: Sequence[str], seq_len: int, batch_size: int, rt: Runtime, *, seed: int = 0,
                 num_workers: int = 0):
    """This rank's endless training stream (saves and restores its position)."""
    from bltdata.data.loader import DataConfig, PatchedDataset, ResumableLoader

    pairs = [parse_source(s) for s in sources]
    config = DataConfig(seed=seed, seq_len=seq_len, batch_size=batch_size)
    dataset = PatchedDataset(pairs, config, rank=rt.rank, world_size=rt.world_size)
    return ResumableLoader(dataset, num_workers=num_workers)


def eval_batches(source: str, seq_len: int, batch_size: int, rt: Runtime) -> Iterator[dict]:
    """One pass over a held-out manifest, in manifest order, same batch count on every rank.

    Nothing is left out and the sequences do not depend on the world size: the manifest's one
    token stream is cut into seq_len sequences, each rank gets a contiguous run of whole
    sequences (`slot_split="sequences"`), the final partial sequence is padded, and a rank with
    fewer batches ends with padding batches — padding is never a counted target, so the summed
    bits per byte equal a single process's up to float rounding.
    """
    from bltdata.data.loader import DataConfig, PatchedDataset

    config = DataConfig(seed=0, shuffle=False, seq_len=seq_len, batch_size=batch_size, epochs=1,
                        even_batches=True, pad_last=True, slot_split="sequences")
    return iter(PatchedDataset(source, config, rank=rt.rank, world_size=rt.world_size))


def manifest_summary(sources: Sequence[str]) -> dict:
    """Mean patch length (bytes per patch, all sources), and the first source's patcher and entropy model."""
    from bltdata.shards import read_manifest

    manifests = [read_manifest(parse_source(s)[0]) for s in sources]
    n_bytes = sum(m.totals["bytes"] for m in manifests)
    n_patches = sum(m.totals["patches"] for m in manifests)
    return {"sources": list(sources), "mean_patch": n_bytes / n_patches if n_patches else None,
            "bytes": n_bytes, "patches": n_patches, "patcher": manifests[0].patcher,
            "entropy_model": manifests[0].entropy_model}
