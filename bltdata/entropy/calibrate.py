"""Choosing the entropy threshold θ from real entropies (``--target-patch-size S``).

A θ is only meaningful for one entropy model: the reference's default (≈ 1.34 nats, about
3.5 bytes per patch with its released model) gives very different patches with another
model. ``calibrate_from_documents`` scores a sample of documents with the engine and
bisects θ so that the mean patch length over the sample is ≈ S
(:func:`bltdata.patching.calibrate_threshold` does the bisection).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable

import numpy as np

from bltdata.entropy.engine import EntropyEngine

logger = logging.getLogger(__name__)


def sample_documents(docs: Iterable[bytes], max_bytes: int) -> list[bytes]:
    """The first documents of ``docs`` up to ``max_bytes`` in total (the last one cut to fit)."""
    sample, remaining = [], max_bytes
    for data in docs:
        if remaining <= 0:
            break
        if data:
            sample.append(data[:remaining])
            remaining -= len(sample[-1])
    return sample


def flat_entropies(entropies: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flat H[0..n-1] of every document (float32) and the offsets (n_docs + 1) between them."""
    lengths = np.array([len(h) - 1 for h in entropies], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([h[:-1] for h in entropies]).astype(np.float32) if entropies else np.empty(0, np.float32)
    return flat, offsets


def calibrate_from_documents(engine: EntropyEngine, docs: Iterable[bytes], target_mean_patch: float,
                             config=None, *, max_bytes: int = 1 << 20) -> tuple[float, dict]:
    """θ giving a mean patch length ≈ ``target_mean_patch`` on the first ``max_bytes`` of ``docs``.

    ``config`` is a :class:`bltdata.patching.PatcherConfig` (mode ``entropy`` or
    ``monotonic``; its threshold is ignored). Returns θ and a summary (documents, bytes,
    patches and the mean patch length reached).
    """
    from bltdata.patching import PatcherConfig, calibrate_threshold, patch_batch  # numba: import on use

    config = config or PatcherConfig()
    sample = sample_documents(docs, max_bytes)
    if not sample:
        raise ValueError("no non-empty documents to calibrate on")
    flat, offsets = flat_entropies(engine.score(sample))
    theta = calibrate_threshold(flat, offsets, target_mean_patch, config)
    _, patch_offsets = patch_batch(dataclasses.replace(config, threshold=theta), offsets, entropies=flat)
    patches = int(patch_offsets[-1])
    summary = {"documents": len(sample), "bytes": int(offsets[-1]), "patches": patches,
               "mean_patch": int(offsets[-1]) / patches, "threshold": theta}
    logger.info("calibrated θ=%.6f on %d bytes: mean patch %.3f", theta, summary["bytes"], summary["mean_patch"])
    return theta, summary
