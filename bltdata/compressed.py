"""Compressed input streams decoded one checked unit at a time (gzip members, zstd frames).

A gzip member ends with the CRC32 and length of its content, a zstd frame optionally with a
checksum of its content; both are checked only when the unit has been decoded to its end, so
bytes decoded before the check are unproven. These generators say where each unit ends
(`UnitEnd`, after its last decoded chunk) and whether a checksum vouched for it, so that a
reader can hold what it built from a unit until the unit is proven (see `HeldRecords`), and
raise `UnitError` — naming the unit and its compressed offset — at a failed check, a decoder
error, a read error or a stream that ends inside a unit.

Memory is bounded by one decoded chunk (`OUT_CHUNK` for gzip, one zstd block) plus one read
(`READ_CHUNK`), whatever the compression ratio.
"""
from __future__ import annotations

import logging
import pickle
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Union

import zstandard

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
OUT_CHUNK = 1 << 17
HOLD_MEMORY_BYTES = 64 << 20  # bytes of held records kept in memory before spilling to a temp file

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MAGIC_TAIL = b"\x2a\x4d\x18"  # skippable frames: 0x184D2A50..0x184D2A5F


@dataclass(frozen=True)
class UnitEnd:
    """The unit whose chunks came before ended cleanly; `verified`: its checksum matched."""

    verified: bool


class UnitError(Exception):
    """A unit failed: `kind` is "corrupt", "truncated" or "read error"; `unit` names it
    ("gzip member 3"), `offset` is its first compressed byte."""

    def __init__(self, kind: str, unit: str, offset: int, detail: str):
        super().__init__(f"{unit} at compressed byte {offset}: {detail}")
        self.kind, self.unit, self.offset, self.detail = kind, unit, offset, detail


Event = Union[bytes, UnitEnd]


class _Input:
    """Buffered compressed input that knows the offset of its first pending byte."""

    def __init__(self, fileobj: BinaryIO):
        self._file = fileobj
        self.pending = b""
        self.offset = 0

    def more(self, n: int = 1) -> bool:
        """Read until `n` bytes are pending; False at the end of the stream."""
        while len(self.pending) < n:
            chunk = self._file.read(max(READ_CHUNK, n - len(self.pending)))
            if not chunk:
                return False
            self.pending += chunk
        return True

    def consume(self, n: int) -> None:
        self.pending = self.pending[n:]
        self.offset += n

    def take(self, n: int) -> bytes:
        if not self.more(n):
            raise EOFError("the stream ends inside a frame")
        out = self.pending[:n]
        self.consume(n)
        return out

    def skip(self, n: int) -> None:
        while n:
            if not self.more(1):
                raise EOFError("the stream ends inside a skippable frame")
            step = min(n, len(self.pending))
            self.consume(step)
            n -= step


def _checked(name: str, source: _Input, units: Iterator[Event], errors: tuple) -> Iterator[Event]:
    """Re-raise a unit's decoder, truncation and read errors as `UnitError`."""
    start = source.offset
    try:
        yield from units
    except EOFError as exc:
        raise UnitError("truncated", name, start, str(exc)) from None
    except OSError as exc:  # before `errors`: zstandard's errors are not OSErrors, zlib's neither
        raise UnitError("read error", name, start, exc.strerror or str(exc)) from None
    except errors as exc:
        raise UnitError("corrupt", name, start, str(exc)) from None


# ----------------------------------------------------------------------------- gzip


def gzip_units(fileobj: BinaryIO) -> Iterator[Event]:
    """Decode a gzip stream member by member; zlib checks each member's header CRC (if any),
    CRC32 and length. Zero bytes between or after members are padding, as the gzip module
    allows; an empty stream has no members."""
    source = _Input(fileobj)
    index = 0
    while _at_member(source):
        index += 1
        yield from _checked(f"gzip member {index}", source, _gzip_member(source), (zlib.error,))
        yield UnitEnd(True)


def _at_member(source: _Input) -> bool:
    while True:
        stripped = source.pending.lstrip(b"\0")
        source.consume(len(source.pending) - len(stripped))
        if source.pending:
            return True
        try:
            if not source.more():
                return False
        except OSError as exc:
            raise UnitError("read error", "gzip stream", source.offset, exc.strerror or str(exc)) from None


def _gzip_member(source: _Input) -> Iterator[bytes]:
    inflater = zlib.decompressobj(31)  # 16 + 15: a gzip wrapper, trailer checked
    while not inflater.eof:
        if not source.pending and not source.more():
            out = inflater.decompress(b"", OUT_CHUNK)  # output zlib still holds
            if not out:
                raise EOFError("the stream ends inside a gzip member")
            yield out
            continue
        data = source.pending
        out = inflater.decompress(data, OUT_CHUNK)
        rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        source.consume(len(data) - len(rest))
        if out:
            yield out


# ----------------------------------------------------------------------------- zstd


def zstd_units(fileobj: BinaryIO) -> Iterator[Event]:
    """Decode a zstd stream frame by frame, one block at a time (RFC 8878 layout).

    zstandard's `stream_reader` ends silently when its input stops inside a frame; this
    follows the frame and block headers and feeds whole blocks to a `decompressobj`, so a
    cut stream and a corrupt block are both errors and memory stays bounded by one block
    (128 KiB of output). A frame is `verified` when its header announces a content checksum
    (libzstd then checks it at the frame's end); skippable frames are passed over.
    """
    source = _Input(fileobj)
    dctx = zstandard.ZstdDecompressor()
    index = 0
    while _more_frames(source):
        index += 1
        checksum: list[bool] = []
        frame = _zstd_frame(source, dctx, checksum)
        yield from _checked(f"zstd frame {index}", source, frame, (zstandard.ZstdError,))
        if checksum:  # empty for a skippable frame
            yield UnitEnd(checksum[0])


def _more_frames(source: _Input) -> bool:
    try:
        return source.more(1)
    except OSError as exc:
        raise UnitError("read error", "zstd stream", source.offset, exc.strerror or str(exc)) from None


def _zstd_frame(source: _Input, dctx, checksum: list[bool]) -> Iterator[bytes]:
    header = _zstd_frame_header(source)
    if header is None:
        return
    has_checksum = bool(header[4] >> 2 & 1)
    frame = dctx.decompressobj()
    data, last = header, False
    while not last:
        block_header = source.take(3)
        value = int.from_bytes(block_header, "little")
        last, block_type, size = bool(value & 1), value >> 1 & 3, value >> 3
        if block_type == 3:
            raise zstandard.ZstdError("corrupt block header (reserved block type)")
        content = source.take((1 if block_type == 1 else size) + (4 if last and has_checksum else 0))
        out = frame.decompress(data + block_header + content)
        data = b""
        if out:
            yield out
    if not frame.eof:
        raise zstandard.ZstdError("the frame does not end at its last block")
    checksum.append(has_checksum)


def _zstd_frame_header(source: _Input) -> bytes | None:
    """The frame header's bytes, or None after skipping a skippable frame."""
    magic = source.take(4)
    if magic[1:] == _SKIPPABLE_MAGIC_TAIL and magic[0] & 0xF0 == 0x50:
        source.skip(int.from_bytes(source.take(4), "little"))
        return None
    if magic != _ZSTD_MAGIC:
        raise zstandard.ZstdError(f"not a zstd frame (magic bytes {magic.hex()})")
    descriptor = source.take(1)
    single_segment = descriptor[0] >> 5 & 1
    content_size_bytes = (single_segment, 2, 4, 8)[descriptor[0] >> 6]
    dict_id_bytes = (0, 1, 2, 4)[descriptor[0] & 3]
    return magic + descriptor + source.take((1 - single_segment) + dict_id_bytes + content_size_bytes)


# ----------------------------------------------------------------------------- holding


class HeldRecords:
    """Records built from a unit not yet proven, in order; spilled to a temporary file
    (pickled) once they exceed `memory_bytes`, so a huge single-member gzip is held on disk."""

    def __init__(self, memory_bytes: int | None = None):
        self.memory_bytes = HOLD_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._memory: list = []
        self._size = 0
        self._spill = None
        self.spilled = 0  # records written to the spill file (for tests and logs)

    def __len__(self) -> int:
        return len(self._memory) + self.spilled

    def add(self, record, size: int) -> None:
        if self._spill is None and self._size + size <= self.memory_bytes:
            self._memory.append(record)
            self._size += size
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="bltdata-held-")
        pickle.dump(record, self._spill, protocol=pickle.HIGHEST_PROTOCOL)
        self.spilled += 1

    def drain(self) -> Iterator:
        """Every held record, in order; the holder is empty afterwards."""
        memory, spill = self._memory, self._spill
        self._memory, self._size, self._spill, self.spilled = [], 0, None, 0
        yield from memory
        if spill is None:
            return
        with spill:
            spill.seek(0)
            while True:
                try:
                    yield pickle.load(spill)
                except EOFError:
                    return

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
        self._memory, self._size, self._spill, self.spilled = [], 0, None, 0
