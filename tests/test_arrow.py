"""Flat numpy views of Arrow columns (bltdata.arrow)."""
import numpy as np
import pyarrow as pa

from bltdata.arrow import binary_flat, drop_last_per_row, list_flat


def test_binary_flat_of_a_sliced_column():
    column = pa.array([b"ab", b"", b"cde", b"f"]).slice(1, 3)
    data, offsets = binary_flat(column)
    assert bytes(data) == b"cdef"
    assert offsets.tolist() == [0, 0, 3, 4]


def test_drop_last_per_row_removes_each_rows_final_value():
    values, offsets = list_flat(pa.array([[1.0, 2.0, 3.0], [4.0], [5.0, 6.0]], pa.list_(pa.float32())))
    kept, kept_offsets = drop_last_per_row(values, offsets)
    assert kept.tolist() == [1.0, 2.0, 5.0]
    assert kept_offsets.tolist() == [0, 2, 2, 3]
