"""Patch-aware packing of documents into fixed-length token sequences (numpy, vectorised).

A document of n bytes becomes n + 2 tokens, `[BOS] + [b + 4 ...] + [EOS]` (docs/design.md §1), and
its patches become `[1] + patch_lengths` with the EOS appended to the document's last patch
(so BOS is always a patch of its own, and EOS never is). An empty
document is `[BOS][EOS]` with patches `[1, 1]`.

Documents are concatenated into one token stream and cut every `seq_len` tokens. Patches are
never split, except where the stream is cut: a patch that straddles a sequence end is split
there and its remainder is the first patch of the next sequence. The same happens at a *seam*,
where a slot's stream continues at a position that does not follow the previous one in the
middle of a document (only after an elastic resume: the rest of a window another slot was
reading): the fragment after the seam starts a new document segment (`doc_ids` changes) even
though it does not begin with BOS.

Everything works on whole arrays (row groups, windows, chunks of sequences): no Python loop
runs per document or per patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bltdata.ids import BOS_ID, EOS_ID, OFFSET

TOKEN_DTYPE = np.int16


# ----------------------------------------------------------------------------- arrow -> numpy


# ----------------------------------------------------------------------------- documents -> stream


def document_tokens(data: np.ndarray, offsets: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Token ids (int16) of consecutive documents: BOS + bytes + 4 + EOS for each (into `out` if given)."""
    n = len(offsets) - 1
    total = len(data) + 2 * n
    bos = offsets[:-1] + 2 * np.arange(n, dtype=np.int64)
    eos = offsets[1:] + 2 * np.arange(n, dtype=np.int64) + 1
    body = np.ones(total, dtype=bool)
    body[bos] = False
    body[eos] = False
    tokens = np.empty(total, dtype=TOKEN_DTYPE) if out is None else out
    tokens[body] = data
    tokens += OFFSET
    tokens[bos] = BOS_ID
    tokens[eos] = EOS_ID
    return tokens


def document_patches(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Token-level patch lengths (int32) of consecutive documents.

    Per document: `[1]` for BOS, then its patches with the EOS added to the last one; an empty
    document gets `[1, 1]`.
    """
    counts = np.diff(offsets)
    empty = counts == 0
    out_counts = 1 + np.maximum(counts, 1)
    starts = np.concatenate([[0], np.cumsum(out_counts)])
    patches = np.empty(int(starts[-1]), dtype=np.int32)
    fill = np.ones(len(patches), dtype=bool)
    fill[starts[:-1]] = False
    fill[starts[:-1][empty] + 1] = False
    patches[~fill] = 1
    patches[fill] = values
    patches[starts[1:][~empty] - 1] += 1
    return patches


def slice_patches(patches: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The patches covering tokens [start, stop) of a stream, cut at both ends."""
    total = int(patches.sum(dtype=np.int64))
    if start == 0 and stop == total:
        return patches
    ends = np.cumsum(patches, dtype=np.int64 if total >= 2**31 else np.int32)
    first = int(np.searchsorted(ends, start, side="right"))
    last = int(np.searchsorted(ends, stop, side="left"))
    out = patches[first:last + 1].copy()
    if first == last:
        out[0] = stop - start
    else:
        out[0] = ends[first] - start
        out[-1] = stop - (ends[last] - patches[last])
    return out


@dataclass
class Fragment:
    """A contiguous run of a slot's token stream: tokens, patches, and seams.

    `start` is the global position of its first token (for resume). `seams` are the offsets
    where a document segment starts without a BOS (the first token after a seam).
    """

    tokens: np.ndarray   # int16
    patches: np.ndarray  # int32, sums to len(tokens)
    seams: np.ndarray    # int64 offsets, sorted
    start: int

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def empty(cls, start: int = 0) -> "Fragment":
        return cls(np.zeros(0, TOKEN_DTYPE), np.zeros(0, np.int32), np.zeros(0, np.int64), start)

    @classmethod
    def from_documents(cls, data: np.ndarray, byte_offsets: np.ndarray, patch_values: np.ndarray,
                       patch_offsets: np.ndarray, *, skip: int, stop: int, start: int, seam: bool,
                       prefix: "Fragment | None" = None) -> "Fragment":
        """Tokens [skip, stop) of the concatenated documents at global `start`, after `prefix`.

        The prefix (the previous remainder) is written in front without a second copy of the
        documents; the result then starts where the prefix starts.
        """
        head = 0 if prefix is None else len(prefix)
        total = len(data) + 2 * (len(byte_offsets) - 1)
        tokens = np.empty(head + stop - skip, dtype=TOKEN_DTYPE)
        if head:
            tokens[:head] = prefix.tokens
        if skip == 0 and stop == total:
            document_tokens(data, byte_offsets, out=tokens[head:])
        else:
            tokens[head:] = document_tokens(data, byte_offsets)[skip:stop]
        patches = slice_patches(document_patches(patch_values, patch_offsets), skip, stop)
        seams = np.array([head], dtype=np.int64) if seam and stop > skip else np.zeros(0, np.int64)
        if head:
            return cls(tokens, np.concatenate([prefix.patches, patches]), np.concatenate([prefix.seams, seams]),
                       prefix.start)
        return cls(tokens, patches, seams, start)


# ----------------------------------------------------------------------------- stream -> sequences


@dataclass
class SequenceChunk:
    """m packed sequences cut from a fragment, with what resume and mixing need per row."""

    tokens: np.ndarray        # (m, seq_len) int16
    patches: np.ndarray       # flat int32: row k's patches are patches[row_offsets[k]:row_offsets[k+1]]
    row_offsets: np.ndarray   # (m + 1,) int64
    seams: np.ndarray         # flat token indices (k * seq_len + column) where a segment starts without BOS
    positions: np.ndarray     # (m,) global position of each row's first token
    _row_bytes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def row_bytes(self) -> np.ndarray:
        """Document bytes (non-special tokens) per row; computed when first asked for (mixing)."""
        if self._row_bytes is None:
            self._row_bytes = (self.tokens >= OFFSET).sum(axis=1, dtype=np.int64)
        return self._row_bytes


def split_patches(patches: np.ndarray, seq_len: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the patches that straddle the first m sequence ends; return (patches, row offsets)."""
    ends = np.cumsum(patches, dtype=np.int64 if m * seq_len >= 2**31 - seq_len else np.int32)
    cuts = np.arange(1, m + 1, dtype=ends.dtype) * seq_len
    at = np.searchsorted(ends, cuts)
    missing = ends[at] != cuts
    inside = at[missing]
    if len(inside) and np.any(np.diff(inside) == 0):  # a patch longer than a sequence holds several cuts
        ends = np.insert(ends, at[missing], cuts[missing])
        out = np.diff(ends, prepend=0).astype(np.int32)
        return out, np.searchsorted(ends, np.arange(m + 1, dtype=np.int64) * seq_len, side="right")
    tail = (ends[inside] - cuts[missing]).astype(np.int32)
    out = np.insert(patches, inside + 1, tail)
    out[inside + np.arange(len(inside))] -= tail
    row_end = at + np.cumsum(missing) + ~missing
    return out, np.concatenate([[0], row_end]).astype(np.int64)


def cut_sequences(fragment: Fragment, seq_len: int, piece_start: int, carried: int) -> tuple[SequenceChunk, Fragment]:
    """Cut whole sequences off the front of `fragment`; return them and the remainder.

    The first `carried` tokens of the fragment came from before `piece_start` (the previous
    remainder, which starts at `fragment.start`); the rest is contiguous from `piece_start`.
    """
    m = len(fragment) // seq_len
    used = m * seq_len
    patches, row_offsets = split_patches(fragment.patches, seq_len, m)
    offsets_in = np.arange(m, dtype=np.int64) * seq_len
    positions = np.where(offsets_in < carried, fragment.start + offsets_in, piece_start + offsets_in - carried)
    split = int(np.searchsorted(fragment.seams, used))
    chunk = SequenceChunk(fragment.tokens[:used].reshape(m, seq_len), patches[:row_offsets[m]], row_offsets,
                          fragment.seams[:split], positions)
    rest_start = fragment.start + used if used < carried else piece_start + used - carried
    rest = Fragment(fragment.tokens[used:], patches[row_offsets[m]:], fragment.seams[split:] - used, rest_start)
    return chunk, rest


def padded_sequence(fragment: Fragment, seq_len: int) -> SequenceChunk:
    """The final partial sequence of a finite stream (0 < len < seq_len) as one full row.

    The rest of the row is PAD (id 0) in one patch of its own, so the row's real tokens keep
    their patches and no padding position is ever a counted target (`blt/loss.py`).
    """
    n = len(fragment)
    assert 0 < n < seq_len, (n, seq_len)
    tokens = np.zeros((1, seq_len), dtype=TOKEN_DTYPE)
    tokens[0, :n] = fragment.tokens
    patches = np.concatenate([fragment.patches, np.array([seq_len - n], dtype=np.int32)])
    return SequenceChunk(tokens, patches, np.array([0, len(patches)], dtype=np.int64), fragment.seams.copy(),
                         np.array([fragment.start], dtype=np.int64))


# ----------------------------------------------------------------------------- sequences -> batch


def _rows_of(rows: list[tuple[SequenceChunk, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens int16 (n, L), flat patches, patch counts) of the rows, without copies for a run of one chunk."""
    chunk, first = rows[0]
    if all(c is chunk and k == first + i for i, (c, k) in enumerate(rows)):
        offsets = chunk.row_offsets[first:first + len(rows) + 1]
        return chunk.tokens[first:first + len(rows)], chunk.patches[offsets[0]:offsets[-1]], np.diff(offsets)
    tokens = np.stack([c.tokens[k] for c, k in rows])
    patches = np.concatenate([c.patches[c.row_offsets[k]:c.row_offsets[k + 1]] for c, k in rows])
    counts = np.array([c.row_offsets[k + 1] - c.row_offsets[k] for c, k in rows], dtype=np.int64)
    return tokens, patches, counts


@dataclass
class PackedBatch:
    """A batch in compact form (int16 tokens): what a DataLoader worker sends to the main process.

    `arrays()` expands it into the int64 layout of the module docstring. The compact form is
    about an eighth of the expanded one, which matters because torch moves worker tensors
    through shared memory at a cost that grows with their size.
    """

    tokens: np.ndarray   # (B, L) int16
    patches: np.ndarray  # flat int32, row by row
    counts: np.ndarray   # (B,) patches per row
    seams: np.ndarray    # flat indices (row * L + column) where a segment starts without BOS

    def arrays(self, *, max_patches: int | None = None, cu_seqlens: bool = False) -> dict[str, np.ndarray]:
        starts = self.tokens == BOS_ID
        starts[:, 0] = True
        starts.reshape(-1)[self.seams] = True
        doc_ids, flat_starts = _segment_ids(starts)
        width = int(self.counts.max()) if max_patches is None else max_patches
        if self.counts.max() > width:
            raise ValueError(f"a sequence has {int(self.counts.max())} patches, more than max_patches={width}")
        patch_lengths = np.zeros((len(self.tokens), width), dtype=np.int64)
        patch_lengths[np.arange(width) < self.counts[:, None]] = self.patches
        batch = {"tokens": self.tokens.astype(np.int64), "patch_lengths": patch_lengths, "doc_ids": doc_ids}
        if cu_seqlens:
            batch["cu_seqlens"] = np.append(flat_starts, starts.size).astype(np.int32)
        return batch


def pack_rows(rows: list[tuple[SequenceChunk, int]]) -> PackedBatch:
    """The given rows (chunk, row index) as one compact batch."""
    tokens, patches, counts = _rows_of(rows)
    seq_len = tokens.shape[1]
    seams = []
    for r, (chunk, k) in enumerate(rows):
        if len(chunk.seams):
            lo, hi = np.searchsorted(chunk.seams, [k * seq_len, (k + 1) * seq_len])
            seams.append(chunk.seams[lo:hi] + (r - k) * seq_len)
    seams = np.concatenate(seams) if seams else np.zeros(0, dtype=np.int64)
    return PackedBatch(np.ascontiguousarray(tokens), np.ascontiguousarray(patches), counts, seams)


def padding_batch(batch_size: int, seq_len: int) -> PackedBatch:
    """A batch of PAD only (no counted target): what a rank short of batches yields at the end of a
    finite run, so that every rank takes the same number of steps (`even_batches`)."""
    return PackedBatch(np.zeros((batch_size, seq_len), dtype=TOKEN_DTYPE), np.full(batch_size, seq_len, np.int32),
                       np.ones(batch_size, dtype=np.int64), np.zeros(0, dtype=np.int64))


def collate(rows: list[tuple[SequenceChunk, int]], *, max_patches: int | None = None,
            cu_seqlens: bool = False) -> dict[str, np.ndarray]:
    """Stack packed rows into a batch of numpy arrays (see the module docstring for the layout)."""
    return pack_rows(rows).arrays(max_patches=max_patches, cu_seqlens=cu_seqlens)


def _segment_ids(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token, the index of its segment within the row (int64), from a (B, L) start mask.

    Segments are long, so repeating one id per segment beats a cumulative sum per token.
    """
    rows, seq_len = starts.shape
    flat = np.flatnonzero(starts.reshape(-1))  # every row starts a segment, so flat[0] == 0
    lengths = np.diff(flat, append=starts.size)
    first = np.searchsorted(flat, np.arange(rows) * seq_len)
    ids = np.arange(len(flat)) - np.repeat(first, np.diff(first, append=len(flat)))
    return np.repeat(ids, lengths).reshape(rows, seq_len), flat
