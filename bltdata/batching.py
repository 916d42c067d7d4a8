"""Work units of the patching job: documents of one input file, grouped by byte budget.

The reader cuts each input file's documents into `DocBatch`es, in file order. Each batch
knows which shard of its file it belongs to (a file's shard rolls over after `shard_bytes`
of document bytes, at a document boundary), its index within that shard, and whether it
closes the shard or the file. The batches then flow through entropy scoring and patching
and reach `ShardSink`, which writes them. Because shard membership is decided here, from
the file alone, the output does not depend on how many workers ran or how batches were
scored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bltdata import fs, jobs, shards
from bltdata.patching import PatcherConfig, patch_batch
from bltdata.readers import Document

log = logging.getLogger(__name__)


@dataclass
class DocBatch:
    """Consecutive documents of one input file, plus where they go."""

    source: str
    key: str                      # jobs.file_key(source)
    shard_index: int
    batch_index: int              # position within its shard, from 0
    doc_ids: list[str] = field(default_factory=list)
    doc_sources: list[str] = field(default_factory=list)  # each document's input file (a pack has several)
    data: list[bytes] = field(default_factory=list)
    last_in_shard: bool = False
    last_in_file: bool = False
    rejected: int = 0             # set on the file's last batch: records sent to rejected/
    input_stat: dict | None = None  # set on the file's last batch: fs.input_stat when it was read
    raw_end: int = 0              # input bytes of the pack read through this batch (for progress)
    entropies: list[np.ndarray] | None = None     # n + 1 float32 per document, once scored
    patch_lengths: list[np.ndarray] | None = None  # int32 per document, once patched

    @property
    def num_bytes(self) -> int:
        return sum(len(d) for d in self.data)

    @property
    def order(self) -> tuple[int, int]:
        return (self.shard_index, self.batch_index)


def iter_doc_batches(documents: Iterable[Document], *, source: str, batch_bytes: int,
                     shard_bytes: int, key: str | None = None) -> Iterator[DocBatch]:
    """Group a file's documents into batches; the last one yielded has `last_in_file` set.

    A batch closes once it holds `batch_bytes` of document bytes; a shard closes once it holds
    `shard_bytes`. A file with no documents still yields one (empty) batch, so its completion
    is recorded downstream. `key` names the shards (default: the file's own key; a pack of
    several files passes its `jobs.Pack.key`).
    """
    key = key or jobs.file_key(source)
    shard_index = batch_index = shard_fill = 0
    current = DocBatch(source, key, 0, 0)
    for doc in documents:
        if current.last_in_shard or (current.data and current.num_bytes >= batch_bytes):
            yield current
            if current.last_in_shard:
                shard_index, batch_index, shard_fill = shard_index + 1, 0, 0
            else:
                batch_index += 1
            current = DocBatch(source, key, shard_index, batch_index)
        current.doc_ids.append(doc.doc_id)
        current.doc_sources.append(doc.source)
        current.data.append(doc.data)
        shard_fill += len(doc.data)
        current.last_in_shard = shard_fill >= shard_bytes
    current.last_in_shard = current.last_in_file = True
    yield current


def stored_precision(entropies: np.ndarray) -> np.ndarray:
    """Entropies rounded to float16 (as shards store them), back in float32.

    The pipeline patches on these rounded values, so patching the entropies stored in a
    shard (`bltdata repatch`) reproduces its boundaries exactly; it also makes it rare that
    floating-point noise (batch composition, device) moves a boundary: only a value that
    straddles a float16 rounding edge can change.
    """
    return np.asarray(entropies, dtype=np.float32).astype(np.float16).astype(np.float32)


def patch_doc_batch(batch: DocBatch, config: PatcherConfig) -> DocBatch:
    """Fill `batch.patch_lengths` with one vectorised patcher call over all its documents."""
    lengths = np.fromiter((len(d) for d in batch.data), dtype=np.int64, count=len(batch.data))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(batch.data), dtype=np.uint8)
    entropies = None
    if config.needs_entropies:
        if batch.entropies is None:
            raise ValueError(f"{batch.source}: mode {config.mode!r} needs entropies but the batch was not scored")
        entropies = np.concatenate([stored_precision(h[: len(d)]) for h, d in zip(batch.entropies, batch.data)]) \
            if batch.data else np.zeros(0, np.float32)
    flat, patch_offsets = patch_batch(config, offsets, entropies=entropies, data=data)
    batch.patch_lengths = [flat[patch_offsets[i]: patch_offsets[i + 1]] for i in range(len(batch.data))]
    return batch


class ShardSink:
    """Writes patched batches into shards, in order, and records each finished input file.

    Batches of one file must arrive in order (shard, batch); the sink holds out-of-order
    arrivals until their turn. When a file's last batch is written it writes the file's
    completion record and returns the `FileRecord`.
    """

    def __init__(self, out_dir: str | Path, *, data_dir: str, patcher: dict, entropy_model: dict | None,
                 store_entropies: bool, row_group_bytes: int = shards.DEFAULT_ROW_GROUP_BYTES):
        self.out_dir = str(out_dir)
        self.data_dir = data_dir
        self.shard_dir = jobs.shard_dir(out_dir, data_dir)  # shards are written under OUT/.bltdata/staging first
        self.writer_options = dict(patcher=patcher, entropy_model=entropy_model, store_entropies=store_entropies,
                                   row_group_bytes=row_group_bytes, staging_dir=shards.staging_path(out_dir))
        self._files: dict[str, _OpenFile] = {}

    def consume(self, batch: DocBatch) -> jobs.FileRecord | None:
        state = self._files.setdefault(batch.key, _OpenFile(jobs.FileRecord(batch.source, batch.key)))
        state.pending[batch.order] = batch
        record = None
        while state.next_order in state.pending:
            record = self._write(state, state.pending.pop(state.next_order))
        return record

    def _write(self, state: "_OpenFile", batch: DocBatch) -> jobs.FileRecord | None:
        if state.writer is None and batch.data:
            path = fs.join(self.shard_dir, jobs.shard_name(batch.key, batch.shard_index))
            state.writer = shards.ShardWriter(path, **self.writer_options)
        store = self.writer_options["store_entropies"]
        for i, (doc_id, data) in enumerate(zip(batch.doc_ids, batch.data)):
            state.writer.add(doc_id, batch.doc_sources[i] if batch.doc_sources else batch.source, data, batch.patch_lengths[i],
                             batch.entropies[i] if store else None)
        state.record.documents += len(batch.data)
        if batch.last_in_shard and state.writer is not None:
            state.record.shards.append(state.writer.close())
            state.writer = None
        state.next_order = (batch.shard_index + 1, 0) if batch.last_in_shard else (batch.shard_index, batch.batch_index + 1)
        if not batch.last_in_file:
            return None
        state.record.rejected = batch.rejected
        state.record.input = batch.input_stat
        self._remove_other_shards(state.record)
        jobs.write_done(self.out_dir, state.record)
        del self._files[batch.key]
        return state.record

    def _remove_other_shards(self, record: jobs.FileRecord) -> None:
        """Shards of the same input left by an earlier version of it (it had more of them)."""
        mine = {info.file for info in record.shards}
        for path in fs.glob(self.shard_dir, f"{record.key}-[0-9][0-9][0-9][0-9][0-9]{shards.SHARD_SUFFIX}"):
            if fs.basename(path) not in mine:
                fs.remove(path)

    def unfinished(self) -> list[str]:
        """Sources whose last batch has not arrived (should be empty at the end of a bundle)."""
        return sorted(state.record.source for state in self._files.values())

    def abort(self) -> None:
        for state in self._files.values():
            if state.writer is not None:
                state.writer.abort()
        self._files.clear()


@dataclass
class _OpenFile:
    record: jobs.FileRecord
    writer: shards.ShardWriter | None = None
    next_order: tuple[int, int] = (0, 0)
    pending: dict = field(default_factory=dict)
