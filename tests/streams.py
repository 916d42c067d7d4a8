"""Compressed test streams shared by the reader and pipeline integrity tests."""
from __future__ import annotations

import io

import zstandard


def zst_frames(pieces: list[bytes], block_bytes: int) -> bytes:
    """Each piece its own checksummed zstd frame of many blocks (one per `block_bytes`), so a
    frame's checksum comes only after its last block."""
    out = io.BytesIO()
    for piece in pieces:
        with zstandard.ZstdCompressor(write_checksum=True).stream_writer(out, closefd=False) as writer:
            for k in range(0, len(piece), block_bytes):
                writer.write(piece[k: k + block_bytes])
                writer.flush(zstandard.FLUSH_BLOCK)
    return out.getvalue()
