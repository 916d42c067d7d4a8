"""Flat numpy views of Arrow columns: the layout every batched step here works on.

A binary (or string) column becomes one flat uint8 array plus int64 offsets; a list column
becomes its flat values plus offsets. Both are read from the Arrow buffers directly, without
a Python object per row, and without `Array.to_numpy`, which imports pandas when it is
installed (~0.3 s, paid again in every DataLoader worker).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_FIXED_WIDTH = {pa.uint8(): np.uint8, pa.int32(): np.int32, pa.int64(): np.int64,
                pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64}


def binary_flat(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint8 bytes, int64 offsets of n_rows + 1, from 0) of a binary or string column."""
    array = _single_chunk(column)
    large = pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type)
    buffers = array.buffers()
    if len(array) == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if large else np.int32)
    offsets = offsets[array.offset:array.offset + len(array) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if buffers[2] is not None \
        else np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def list_flat(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, int64 offsets of n_rows + 1, from 0) of a list column (null lists are empty)."""
    array = _single_chunk(column)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset:array.offset + len(array) + 1] \
        .astype(np.int64) if len(array) else np.zeros(1, np.int64)
    child = array.values
    dtype = _FIXED_WIDTH.get(child.type)
    if dtype is None:  # not a plain numeric type: let Arrow convert it
        values = child.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(zero_copy_only=False)
    elif child.buffers()[1] is None or offsets[-1] == offsets[0]:
        values = np.zeros(0, dtype)
    else:
        values = np.frombuffer(child.buffers()[1], dtype=dtype)[child.offset:child.offset + len(child)]
        values = values[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


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
