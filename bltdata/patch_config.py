"""The patcher's configuration (docs/design.md §3): the modes, the reference θ and `PatcherConfig`.

Kept apart from the compiled kernels of `bltdata.patching` so that any layer (the CLI, the
patch-job options, shard metadata) can import it without numba or numpy.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from bltdata.options import is_integer, is_real

MODES = ("entropy", "monotonic", "space", "static", "byte")
ENTROPY_MODES = ("entropy", "monotonic")  # the modes that read entropies and have a θ to calibrate
DEFAULT_THRESHOLD = 1.335442066192627  # the reference entropy model's θ (nats)


@dataclass(frozen=True)
class PatcherConfig:
    """How to cut documents into patches (docs/design.md §3); stored in every shard's metadata.

    ``threshold`` is θ of the ``entropy`` and ``monotonic`` modes (nats, compared as
    float32); ``threshold_add`` is the extra relative threshold of ``entropy`` mode;
    ``patch_size`` is P of ``static`` mode; ``max_patch_length`` (any mode) caps lengths.
    """

    mode: str = "entropy"
    threshold: float = DEFAULT_THRESHOLD
    threshold_add: float | None = None
    max_patch_length: int | None = None
    patch_size: int = 4

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown patching mode {self.mode!r}; "
                             f"choose one of {', '.join(MODES)}")
        if not is_real(self.threshold) or math.isnan(self.threshold):
            raise ValueError(f"threshold must be a number, got {self.threshold!r}")
        if self.threshold_add is not None:
            if self.mode != "entropy":
                raise ValueError(f"threshold_add applies only to mode 'entropy', not {self.mode!r}")
            if not is_real(self.threshold_add) or math.isnan(self.threshold_add):
                raise ValueError(
                    f"threshold_add must be a number or None, got {self.threshold_add!r}")
        if self.max_patch_length is not None and (
                not is_integer(self.max_patch_length) or self.max_patch_length < 1):
            raise ValueError("max_patch_length must be an integer >= 1 or None, "
                             f"got {self.max_patch_length!r}")
        if not is_integer(self.patch_size) or self.patch_size < 1:
            raise ValueError(f"patch_size must be an integer >= 1, got {self.patch_size!r}")

    @property
    def needs_entropies(self) -> bool:
        """True for the modes that read per-byte entropies (``entropy``, ``monotonic``)."""
        return self.mode in ENTROPY_MODES

    @property
    def needs_bytes(self) -> bool:
        """True for the mode that reads the document bytes (``space``)."""
        return self.mode == "space"

    def to_dict(self) -> dict:
        """Plain JSON-able dict: mode, threshold, threshold_add, max_patch_length, patch_size."""
        def optional(value, kind):
            return None if value is None else kind(value)

        return {
            "mode": self.mode,
            "threshold": float(self.threshold),
            "threshold_add": optional(self.threshold_add, float),
            "max_patch_length": optional(self.max_patch_length, int),
            "patch_size": int(self.patch_size),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PatcherConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys fail."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown patcher config keys {unknown}; "
                             f"expected some of {sorted(known)}")
        return cls(**d)

