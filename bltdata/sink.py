"""The shard sink: patched `DocBatch`es of a pack → its shards and its completion record.

Batches of one pack must arrive in their order (shard, batch), as `iter_doc_batches` made
them: every runner this project runs on delivers them so, because a pack is read, scored,
patched and written in one fused stage by one worker (on Dask, one pack per partition).
The sink does not reorder: a batch out of order is a bug in the runner or the graph, and it
raises, naming the pack and the order it expected and got. When a pack's last batch is
written the sink writes the pack's completion record (`jobs.write_done`) and returns it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bltdata import fs, jobs, shards
from bltdata.batching import DocBatch


class BatchOrderError(RuntimeError):
    """A pack's batches reached the shard sink out of order."""


class ShardSink:
    """Writes patched batches into shards, in order, and records each finished pack."""

    def __init__(self, out_dir: str | Path, *, data_dir: str, patcher: dict, entropy_model: dict | None,
                 store_entropies: bool, row_group_bytes: int = shards.DEFAULT_ROW_GROUP_BYTES):
        self.out_dir = str(out_dir)
        self.data_dir = data_dir
        self.shard_dir = jobs.shard_dir(out_dir, data_dir)  # shards are written under OUT/.bltdata/staging first
        self.writer_options = dict(patcher=patcher, entropy_model=entropy_model, store_entropies=store_entropies,
                                   row_group_bytes=row_group_bytes, staging_dir=shards.staging_path(out_dir))
        self._files: dict[str, _OpenFile] = {}

    def consume(self, batch: DocBatch) -> jobs.FileRecord | None:
        """Write `batch`; returns the pack's completion record once its last batch is written."""
        state = self._files.setdefault(batch.key, _OpenFile(jobs.FileRecord(batch.source, batch.key)))
        if batch.order != state.next_order:
            self.abort()
            raise BatchOrderError(f"{batch.source} (pack {batch.key}): expected batch (shard, batch) "
                                  f"{state.next_order}, got {batch.order}; the runner delivered the pack's "
                                  f"batches out of order")
        return self._write(state, batch)

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
