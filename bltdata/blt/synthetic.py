"""In-memory batches in the loader's format, for tests, benchmarks and quick experiments.

``InMemoryBatches`` packs a list of documents (bytes + patch lengths) into rows exactly
like the shard loader's batch contract: each document becomes ``[BOS] + bytes + [EOS]``
with BOS its own 1-token patch and EOS appended to the document's last patch; documents
follow each other in a seeded order per epoch; a row holds ``seq_len`` tokens, a patch that
crosses a row boundary is split there, and ``doc_ids`` number the documents within a row
from 0. It loops over epochs forever and saves/restores its position (``state_dict``).
It is not the production loader (`bltdata.data`): no shards, no ranks beyond striding.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from bltdata.ids import BOS_ID, EOS_ID, OFFSET


def document_tokens(data: bytes, patch_lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and token-level patch lengths of one document: BOS patch, byte patches (+EOS)."""
    if sum(patch_lengths) != len(data):
        raise ValueError(f"patch lengths sum to {sum(patch_lengths)}, document has {len(data)} bytes")
    tokens = np.concatenate([[BOS_ID], np.frombuffer(data, dtype=np.uint8).astype(np.int64) + OFFSET, [EOS_ID]])
    lengths = [1, *patch_lengths] if len(patch_lengths) else [1, 0]  # empty document: EOS alone
    lengths[-1] += 1
    return tokens.astype(np.int64), np.asarray(lengths, dtype=np.int64)


class InMemoryBatches:
    def __init__(self, docs: Sequence[tuple[bytes, Sequence[int]]], seq_len: int, batch_size: int, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if not docs:
            raise ValueError("InMemoryBatches needs at least one document")
        self.docs = [document_tokens(data, lengths) for data, lengths in docs]
        self.seq_len, self.batch_size = seq_len, batch_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch, self.cursor, self.offset, self.rows_done = 0, 0, 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "offset": self.offset, "rows_done": self.rows_done}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor, self.offset, self.rows_done = (
            state["epoch"], state["cursor"], state["offset"], state["rows_done"])

    def _order(self) -> np.ndarray:
        n = len(self.docs)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def _next_row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, lengths, docs, filled, order = [], [], [], 0, self._order()
        while filled < self.seq_len:
            doc_tokens, doc_lengths = self.docs[order[self.cursor]]
            take = min(self.seq_len - filled, len(doc_tokens) - self.offset)
            tokens.append(doc_tokens[self.offset:self.offset + take])
            lengths.append(_slice_lengths(doc_lengths, self.offset, take))
            docs.append(np.full(take, len(docs), dtype=np.int64))
            filled += take
            self.offset += take
            if self.offset == len(doc_tokens):
                self.offset, self.cursor = 0, self.cursor + 1
                if self.cursor == len(self.docs):
                    self.cursor, self.epoch = 0, self.epoch + 1
                    order = self._order()
        return np.concatenate(tokens), np.concatenate(lengths), np.concatenate(docs)

    def __iter__(self) -> Iterator[dict]:
        while True:
            rows = []
            while len(rows) < self.batch_size:
                row = self._next_row()
                if self.rows_done % self.world_size == self.rank:
                    rows.append(row)
                self.rows_done += 1
            yield _collate(rows)


def _slice_lengths(lengths: np.ndarray, start: int, count: int) -> np.ndarray:
    """Patch lengths of tokens [start, start + count) of a document (patches cut at the edges)."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    lo, hi = np.maximum(starts, start), np.minimum(ends, start + count)
    keep = hi > lo
    return (hi - lo)[keep]


def _collate(rows) -> dict:
    width = max(len(lengths) for _, lengths, _ in rows)
    patch_lengths = np.zeros((len(rows), width), dtype=np.int64)
    for i, (_, lengths, _) in enumerate(rows):
        patch_lengths[i, :len(lengths)] = lengths
    return {"tokens": np.stack([t for t, _, _ in rows]), "patch_lengths": patch_lengths,
            "doc_ids": np.stack([d for _, _, d in rows])}


def static_patches(n_bytes: int, size: int) -> list[int]:
    """Fixed-size patches over a document (the last one shorter)."""
    return [size] * (n_bytes // size) + ([n_bytes % size] if n_bytes % size else [])
