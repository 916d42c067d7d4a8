"""One manifest as the loader sees it: row-group sizes, per-epoch order, and window reads.

Start-up reads only `manifest.json` (per-row-group row and byte counts are listed there), so it
does not grow with the number of shards beyond that one file; a manifest that contradicts
itself (an entry removed or edited: its totals or fingerprint no longer match the shard list)
is refused. A shard is opened when one of its row groups is needed (memory-mapped, page
checksums verified); opening checks its size and row-group count against the manifest, and
every row group read is checked against the manifest's sha256 of its stored column chunks
(`shards.row_group_digest`, ~2 % of the decoding cost) and its row and byte counts, so a shard
replaced, forged or corrupted since the manifest was written is refused, naming the file,
instead of silently changing the data. Manifests written before `row_group_sha256` existed are
still read, with a warning: their row groups are checked by size and counts only.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bltdata import shards
from bltdata.data.order import EpochOrder, epoch_order, fingerprint_key, permutation
from bltdata.arrow import binary_flat, list_flat
from bltdata.data.packing import Fragment

log = logging.getLogger(__name__)

READ_COLUMNS = ["bytes", "patch_lengths"]
_CACHED_EPOCHS = 4


class ShardMismatchError(ValueError):
    """A shard (or the manifest) differs from what the manifest (or a saved state) says."""


@dataclass
class Window:
    """The documents of one window, in their shuffled order, ready to be cut into fragments."""

    epoch: int
    index: int
    data: pa.Array          # binary, documents in storage order
    patches: pa.Array       # binary: each row holds its int32 patch lengths (so `take` is a memcpy)
    order: np.ndarray       # (n,) documents in stream order (indices into data)
    doc_offsets: np.ndarray  # (n + 1,) token offset of each document (stream order) in the window

    @property
    def num_tokens(self) -> int:
        return int(self.doc_offsets[-1])

    def document_end(self, t: int) -> int:
        """The first document boundary at or after window offset t (the window's end at most)."""
        return int(self.doc_offsets[min(int(np.searchsorted(self.doc_offsets, t)), len(self.doc_offsets) - 1)])

    def fragment(self, start: int, stop: int, *, global_start: int, seam: bool,
                 prefix: Fragment | None = None) -> Fragment:
        """Tokens [start, stop) of this window's stream (window-relative offsets), after `prefix`."""
        first = int(np.searchsorted(self.doc_offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.doc_offsets, stop, side="left"))
        rows = _arrow_int64(self.order[first:last])
        data, byte_offsets = binary_flat(self.data.take(rows))
        packed, packed_offsets = binary_flat(self.patches.take(rows))
        base = int(self.doc_offsets[first])
        return Fragment.from_documents(data, byte_offsets, packed.view(np.int32), packed_offsets // 4,
                                       skip=start - base, stop=stop - base, start=global_start, seam=seam,
                                       prefix=prefix)


def _arrow_int64(values: np.ndarray) -> pa.Array:
    """A numpy int64 array as an Arrow array, zero-copy (`pa.array` would import pandas)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _lists_as_binary(lists: pa.Array) -> pa.Array:
    """A list<int32> column as a binary column of the same rows (4 bytes per value)."""
    values, offsets = list_flat(lists)
    byte_offsets = (offsets * 4).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(lists), [None, pa.py_buffer(byte_offsets),
                                                            pa.py_buffer(np.ascontiguousarray(values))])


class ManifestSource:
    """Row groups of one shard directory, their per-epoch order, and reads of whole windows."""

    def __init__(self, path: str | os.PathLike, *, seed: int, shuffle: bool, shuffle_window: int,
                 use_threads: bool = False):
        try:
            self.manifest = shards.read_manifest(path)
        except shards.ManifestError as e:
            raise ShardMismatchError(str(e)) from None
        self.path = str(self.manifest.path)
        self.fingerprint = self.manifest.fingerprint
        self.seed, self.shuffle, self.shuffle_window = seed, shuffle, shuffle_window
        self.use_threads = use_threads
        self._index_row_groups()
        self._epochs: OrderedDict[int, EpochOrder] = OrderedDict()

    def _index_row_groups(self) -> None:
        rows, nbytes, shard_of, index_in = [], [], [], []
        for i, info in enumerate(self.manifest.shards):
            if len(info.row_group_rows) != info.row_groups or len(info.row_group_bytes) != info.row_groups:
                raise ShardMismatchError(f"{self.path}: shard {info.file} lacks per-row-group rows/bytes in the "
                                         f"manifest (needed by the loader); rewrite the manifest with this bltdata")
            rows.extend(info.row_group_rows)
            nbytes.extend(info.row_group_bytes)
            shard_of.extend([i] * info.row_groups)
            index_in.extend(range(info.row_groups))
        self.row_group_rows = np.asarray(rows, dtype=np.int64)
        self.row_group_bytes = np.asarray(nbytes, dtype=np.int64)
        self.row_group_tokens = self.row_group_bytes + 2 * self.row_group_rows
        self.row_group_shard = np.asarray(shard_of, dtype=np.int64)
        self.row_group_index = np.asarray(index_in, dtype=np.int64)
        self.tokens_per_epoch = int(self.row_group_tokens.sum())
        if any(not info.row_group_sha256 for info in self.manifest.shards):
            log.warning("%s: manifest has no row_group_sha256 (written by an older bltdata): row groups are "
                        "checked by size and counts only; `bltdata verify` checks every shard's sha256", self.path)
        if self.tokens_per_epoch == 0:
            raise ShardMismatchError(f"{self.path}: the manifest lists no documents")

    @property
    def num_row_groups(self) -> int:
        return len(self.row_group_tokens)

    @property
    def num_windows(self) -> int:
        return -(-self.num_row_groups // self.shuffle_window)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_epochs"] = OrderedDict()
        return state

    def epoch(self, e: int) -> EpochOrder:
        """The order of epoch e (cached: a few epochs are in use at a time)."""
        if e not in self._epochs:
            self._epochs[e] = epoch_order(self.row_group_tokens, e, seed=self.seed, fingerprint=self.fingerprint,
                                          shuffle=self.shuffle, shuffle_window=self.shuffle_window)
            while len(self._epochs) > _CACHED_EPOCHS:
                self._epochs.popitem(last=False)
        return self._epochs[e]

    def _open(self, info: shards.ShardInfo) -> tuple[Path, pa.MemoryMappedFile, pq.ParquetFile]:
        """Open a listed shard for one read: its path (the manifest's `shard_path`), the memory map and
        the Parquet file. Not cached: opening costs ~0.2 ms, and a shard kept open would keep every
        page read from it mapped, so RSS would grow with the shard."""
        path = self.manifest.shard_path(info)
        try:
            mapped = pa.memory_map(str(path))
        except FileNotFoundError:
            raise ShardMismatchError(f"{path}: missing, but listed in {self.path}") from None
        size_problem = shards.shard_size_problem(info, mapped.size())
        if size_problem:
            raise ShardMismatchError(f"{path}: {size_problem}; manifest {self.path}")
        try:
            pf = shards.open_shard(mapped)
        except (OSError, pa.ArrowException) as e:
            raise ShardMismatchError(f"{path}: not a readable Parquet file ({e}); {self.path} lists it") from None
        if pf.num_row_groups != info.row_groups:
            raise ShardMismatchError(f"{path}: {pf.num_row_groups} row groups, {self.path} lists {info.row_groups}")
        return path, mapped, pf

    def read_row_group(self, rg: int) -> tuple[pa.Array, pa.Array]:
        """(bytes, patch_lengths) of one row group (flat id), checked against the manifest."""
        shard, index = int(self.row_group_shard[rg]), int(self.row_group_index[rg])
        info = self.manifest.shards[shard]
        shard_path, mapped, pf = self._open(info)
        if info.row_group_sha256 and shards.row_group_digest(mapped, pf.metadata, index) != info.row_group_sha256[index]:
            raise ShardMismatchError(f"{shard_path}: row group {index} differs from its sha256 in {self.path} "
                                     f"(shard replaced, forged or corrupted since the manifest was written)")
        try:
            table = pf.read_row_group(index, columns=READ_COLUMNS, use_threads=self.use_threads)
        except (OSError, pa.ArrowException) as e:
            raise ShardMismatchError(f"{shard_path}: row group {index} unreadable: {e}") from None
        data = table.column("bytes").combine_chunks()
        patches = table.column("patch_lengths").combine_chunks()
        nbytes = int(binary_flat(data)[1][-1])
        if len(data) != self.row_group_rows[rg] or nbytes != self.row_group_bytes[rg]:
            raise ShardMismatchError(
                f"{shard_path}: row group {index} has {len(data)} rows / {nbytes} bytes, the manifest "
                f"{self.path} says {self.row_group_rows[rg]} / {self.row_group_bytes[rg]}")
        return data, patches

    def read_window(self, e: int, j: int) -> Window:
        """Read the row groups of window j of epoch e and shuffle its documents."""
        groups = self.epoch(e).window_row_groups(j)
        parts = [self.read_row_group(int(rg)) for rg in groups]
        data = pa.concat_arrays([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        patches = _lists_as_binary(pa.concat_arrays([p[1] for p in parts]) if len(parts) > 1 else parts[0][1])
        lengths = np.diff(binary_flat(data)[1]) + 2
        order = (permutation(len(lengths), self.seed, fingerprint_key(self.fingerprint), e, j, 2) if self.shuffle
                 else np.arange(len(lengths), dtype=np.int64))
        doc_offsets = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
        return Window(e, j, data, patches, order, doc_offsets)
