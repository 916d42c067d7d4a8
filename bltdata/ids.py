"""Byte ids, compatible with the reference BLT (docs/design.md §1).

Byte ``b`` maps to id ``b + 4``; 0 is BOE/padding, 1 is BOS, 2 is EOS, 3 is reserved
(the reference's BPE delimiter). The vocabulary therefore has 260 entries.
"""
from __future__ import annotations

import numpy as np

PAD_ID = 0
BOE_ID = 0
BOS_ID = 1
EOS_ID = 2
RESERVED_ID = 3
OFFSET = 4
VOCAB_SIZE = 260


def bytes_to_ids(data: bytes, *, bos: bool = True, eos: bool = False) -> np.ndarray:
    """Token ids (int64) of a document: ``[BOS] + [b + 4 ...] (+ [EOS])``."""
    body = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + OFFSET
    parts = []
    if bos:
        parts.append(np.array([BOS_ID], dtype=np.int64))
    parts.append(body)
    if eos:
        parts.append(np.array([EOS_ID], dtype=np.int64))
    return np.concatenate(parts) if len(parts) > 1 else body


def ids_to_bytes(ids) -> bytes:
    """The bytes of a sequence of ids; special ids (< 4) are dropped."""
    arr = np.asarray(ids, dtype=np.int64)
    arr = arr[arr >= OFFSET]
    if arr.size and arr.max() >= VOCAB_SIZE:
        raise ValueError(f"id {int(arr.max())} is outside the byte vocabulary (< {VOCAB_SIZE})")
    return (arr - OFFSET).astype(np.uint8).tobytes()
