"""Work units of the patching job: documents of one input file, grouped by byte budget.

The reader cuts each input file's documents into `DocBatch`es, in file order. Each batch
knows which shard of its file it belongs to (a file's shard rolls over after `shard_bytes`
of document bytes, at a document boundary), its index within that shard, and whether it
closes the shard or the file. The batches then flow through entropy scoring and patching
and reach `bltdata.sink.ShardSink`, which writes them. Because shard membership is decided
here, from the file alone, the output does not depend on how many workers ran or how batches
were scored.

`patch_doc_batch` lives here rather than in `bltdata.patching`: it is the step that maps a
work unit (documents as a list, entropies per document, rounded as shards store them) onto
the patcher's flat arrays; `bltdata.patching` stays a pure array algorithm that knows no
pipeline types (`repatch` and the inspectors call it on shards, with no `DocBatch`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from bltdata import jobs, shards
from bltdata.patching import PatcherConfig, patch_batch
from bltdata.readers import Document


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
        entropies = np.concatenate([shards.stored_precision(h[: len(d)])
                                    for h, d in zip(batch.entropies, batch.data)]) \
            if batch.data else np.zeros(0, np.float32)
    flat, patch_offsets = patch_batch(config, offsets, entropies=entropies, data=data)
    batch.patch_lengths = [flat[patch_offsets[i]: patch_offsets[i + 1]] for i in range(len(batch.data))]
    return batch
