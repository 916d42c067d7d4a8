"""Operations on flat per-row values (see `bltdata.arrow` for the flat views themselves)."""
from __future__ import annotations

import numpy as np


def drop_last_per_row(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's values without its last one: H[0..n] per document becomes H[0..n-1].

    Rows must hold at least one value (a document of n bytes stores n + 1 entropies).
    """
    keep = np.ones(len(values), dtype=bool)
    keep[offsets[1:] - 1] = False
    new_offsets = offsets - np.arange(len(offsets), dtype=np.int64)
    return values[keep], new_offsets
