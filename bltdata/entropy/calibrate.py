"""Choosing the entropy threshold θ from real entropies (``--target-patch-size S``).

A θ is only meaningful for one entropy model: the reference's default (≈ 1.34 nats, about
3.5 bytes per patch with its released model) gives very different patches with another
model. ``calibrate_from_documents`` scores a sample of documents with the engine and
bisects θ so that the mean patch length over the sample is ≈ S
(:func:`bltdata.patching.calibrate_threshold` does the bisection).

``choose_threshold`` is the one rule every command (``patch``, ``entropy score``,
``entropy calibrate``, ``generate``'s override) uses to pick θ: an explicit ``--threshold``,
else θ calibrated for ``--target-patch-size``, else (entropy mode) the model's
``recommended_threshold`` from its ``config.json`` (``entropy train`` and
``entropy calibrate --write`` record one), else the reference's 1.3354.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Iterable

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


MISMATCH_FACTOR = 1.5  # patch warns when the mean patch is this far (either way) from θ's calibration target


@dataclass(frozen=True)
class ThresholdChoice:
    """The θ a command uses, where it came from, and the mean patch it was calibrated for (if known)."""

    threshold: float
    source: str
    target_patch_size: float | None = None

    def describe(self) -> str:
        target = f", calibrated for {self.target_patch_size:g}-byte patches" if self.target_patch_size else ""
        return f"θ = {self.threshold:.6g} ({self.source}{target})"

    def mismatch(self, mean_patch: float) -> str | None:
        """A warning when ``mean_patch`` is more than MISMATCH_FACTOR× off the calibration target."""
        target = self.target_patch_size
        if not target or not mean_patch or 1 / MISMATCH_FACTOR <= mean_patch / target <= MISMATCH_FACTOR:
            return None
        return (f"mean patch {mean_patch:.2f} bytes is far from the {target:g} bytes {self.describe()} was "
                f"calibrated for (other data than it was calibrated on?): choose θ for this corpus with "
                f"--target-patch-size, or `bltdata entropy calibrate MODEL INPUT... --target-patch-size S --write`")


def choose_threshold(model: str | None, mode: str, *, threshold: float | None = None,
                     target_patch_size: float | None = None,
                     calibrate: Callable[[], float] | None = None) -> ThresholdChoice:
    """θ by the shared rule: --threshold > --target-patch-size (``calibrate()``) > the model's
    recommended θ (entropy mode only) > the reference's θ. ``model`` may be None (no model)."""
    from bltdata.patching import DEFAULT_THRESHOLD

    if threshold is not None and target_patch_size is not None:
        raise ValueError("give --threshold or --target-patch-size, not both")
    if threshold is not None:
        return ThresholdChoice(float(threshold), "--threshold")
    if target_patch_size is not None:
        return ThresholdChoice(float(calibrate()), "--target-patch-size", target_patch_size)
    if mode == "entropy" and model is not None:
        from bltdata.entropy.checkpoint import read_config

        meta = read_config(model)
        if meta.get("recommended_threshold") is not None:
            return ThresholdChoice(float(meta["recommended_threshold"]), f"recommended by {model}'s config.json",
                                   meta.get("recommended_target_patch_size"))
        return ThresholdChoice(DEFAULT_THRESHOLD, f"the reference θ: {model} records none; calibrate it with "
                                                  f"`bltdata entropy calibrate {model} INPUT... --write`")
    return ThresholdChoice(DEFAULT_THRESHOLD, "the reference θ")
