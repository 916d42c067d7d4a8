"""Flat numpy views of the Arrow columns the inspection tools batch over.

`repatch`, `import-blt-arrow` and `export` handle a row group (or an Arrow record batch) at a
time: the document bytes become one flat uint8 array plus int64 offsets, and a
`list<float16>` column becomes its flat values plus offsets. That is the layout
`bltdata.patching.patch_batch` takes, and it avoids a Python object per byte.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def binary_flat(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint8 bytes, int64 offsets of n_rows + 1) of a binary or string column."""
    array = _single_chunk(column)
    offset_type = np.int64 if pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type) else np.int32
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1].astype(np.int64)
    if len(array) == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if buffers[2] is not None else np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def list_flat(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, int64 offsets of n_rows + 1) of a list column (null lists count as empty)."""
    array = _single_chunk(column)
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return values.to_numpy(zero_copy_only=False), offsets - offsets[0]


def drop_last_per_row(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's values without its last one: H[0..n] per document becomes H[0..n-1].

    Rows must hold at least one value (a document of n bytes stores n + 1 entropies).
    """
    keep = np.ones(len(values), dtype=bool)
    keep[offsets[1:] - 1] = False
    new_offsets = offsets - np.arange(len(offsets), dtype=np.int64)
    return values[keep], new_offsets


def _single_chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column
