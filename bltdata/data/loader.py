"""`PatchedDataset`: a PyTorch IterableDataset of packed, patch-aware batches from shards.

How the data flows (each step in its own module):

- `order.py` — every epoch of a source is one token stream: row groups in a seeded order
  that depends only on (seed, epoch, manifest fingerprint), grouped into windows of
  `shuffle_window` row groups whose documents are shuffled together. The stream is split at
  window boundaries into equal shares for the `world_size * num_workers` slots
  (slot = rank * num_workers + worker), so every row group is read by exactly one slot per
  epoch, whole (a data set with fewer windows than slots is cut at equal token counts).
- `source.py` — reads a window (whole row groups, memory-mapped Parquet, checksums verified).
- `packing.py` — turns documents into `[BOS] bytes [EOS]` tokens and patch lengths and cuts
  the slot's stream into `seq_len` sequences, splitting a patch only where a sequence ends.
- `mixing.py` — with several sources, picks the source of each sequence by bytes delivered.

Each slot yields whole batches (`batch_size` sequences), so use `DataLoader(dataset,
batch_size=None)`. A batch is a dict of torch tensors: `tokens` int64 (B, seq_len),
`patch_lengths` int64 (B, P) zero-padded with rows summing to seq_len, `doc_ids` int64
(B, seq_len) — the index of the document segment within the row, from 0, for attention masks —
and, if asked for, `cu_seqlens` int32 (flash-attention varlen layout over the flattened batch)
and `source` int64 (B,). A DataLoader worker sends the batch in compact form (int16 tokens,
about 1/8 of the bytes) and it is expanded when the main process unpickles it: torch's
shared-memory transfer of three int64 tensors costs more than making the batch.

Epochs: with `epochs=None` (the default, for training) each slot streams epoch after epoch
forever (each epoch reshuffled); every rank yields batches for as long as it is asked, so no
rank waits, and a training loop runs `batches_per_epoch()` steps per nominal epoch. With
`epochs=k` each slot stops after its share of k epochs, every share delivered whole: the workers
of a rank are never evened out. With `even_batches` (the default; finite, single source) every
*rank* yields the same number of batches — a rank with fewer ends with padding batches (every
token PAD = 0, never a counted target, `blt/loss.py`), so DDP/FSDP collectives stay matched.
Not delivered at the end of a finite run: each slot's final partial sequence, fewer than seq_len
tokens, so at most `world_size * num_workers * (seq_len - 1)` tokens per source in all — nothing
with `pad_last=True`, which delivers it padded with PAD — and, only with `drop_last=True`, each
slot's final short batch. (A finite mixture of several sources ends with its first exhausted
source, so that the proportions stay exact.) `slot_split="sequences"` cuts the slots' shares at
multiples of seq_len of the one stream instead of at windows, so the sequences themselves do
not depend on the number of slots: evaluation uses it with `pad_last` (`blt/data.py`), and its
bits per byte are the same at any world size.

Resume (`state.py` has the formats): the state is, per source, the global position of the
first token not yet delivered in a batch — O(1), with the partial sequence in flight and the
shuffle window implied by it. Loading re-reads only the window holding that position, so a
resume at 90 % of an epoch starts as fast as a fresh start.

- Same world size and workers: exactly the batches an uninterrupted run would yield. With
  `torchdata.stateful_dataloader.StatefulDataLoader(ds, batch_size=None, num_workers=k)` use
  its `state_dict()` / `load_state_dict()`; with a plain `DataLoader` wrap the dataset in
  `ResumableLoader`, which keeps each worker's state from the batches it hands out. A state
  taken before the first batch resumes at the start; one taken after a finite pass ended
  resumes as the uninterrupted loader's next iteration would (a new pass from the start): a
  state loaded into the dataset applies to its next iteration only (in each process: a
  DataLoader's workers iterate copies, so for a second pass of a plain or Stateful DataLoader
  built around a dataset given a state, build a new dataset or use ResumableLoader).
- Different world size or workers (elastic): pass the states of *all* old ranks, as a list, to
  `PatchedDataset.load_state_dict` (or `ResumableLoader.load_state_dict`) on every new rank, then
  build a new `StatefulDataLoader` around the dataset — `StatefulDataLoader.load_state_dict`
  takes only its own state of the same worker count, never a list. Everything no old slot
  delivered — the rest of each partially read window from its recorded position (each goes
  whole to one new slot), the untouched windows of the epochs in progress, then the later
  epochs — is shared out among the new slots: nothing is lost or repeated. A new slot that continues such a window starts
  with the rest of the document the old slot was cutting, which may then follow another
  document mid-sequence without its BOS; it is a `doc_ids` segment of its own. (Otherwise a
  slot's stream only jumps at window boundaries, which are document boundaries — except in
  a data set with fewer windows than slots.)

    ds = PatchedDataset("shards/", DataConfig(seq_len=8192, batch_size=8), rank=rank, world_size=world)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=4)
    for step, batch in zip(range(ds.batches_per_epoch()), loader):
        ...
    checkpoint["data"] = loader.state_dict()
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from bltdata.data.mixing import StrideScheduler
from bltdata.data.order import Plan, all_work_tokens, slot_work
from bltdata.data.packing import (Fragment, PackedBatch, SequenceChunk, cut_sequences, pack_rows, padded_sequence,
                                  padding_batch)
from bltdata.data.source import ManifestSource
from bltdata.data.state import ORDER_KEYS, STATE_FORMAT, Resume, StateError, merged, resume_from

log = logging.getLogger(__name__)

# Windows are packed a piece of about this many tokens at a time (cut at a document end):
# small arrays stay in the allocator's reused memory and in cache instead of faulting in
# fresh pages for every window.
PIECE_TOKENS = 1 << 20


@dataclass(frozen=True)
class DataConfig:
    """How batches are made. `seed`, `shuffle` and `shuffle_window` define the global order: a saved
    state only loads with the same values. The others may change between runs (positions are
    token positions, so even seq_len and batch_size may)."""

    seed: int = 0
    shuffle: bool = True          # False: manifest order, no document shuffle
    shuffle_window: int = 4       # row groups whose documents are shuffled together
    seq_len: int = 8192           # tokens per sequence (model input + 1 for the targets)
    batch_size: int = 8           # sequences per batch (per slot)
    epochs: int | None = None     # None: stream forever; k: stop after k epochs
    even_batches: bool = True     # finite, single source: same number of batches on every rank (padding batches)
    drop_last: bool = False       # finite: drop the final batch when it has < batch_size rows
    pad_last: bool = False        # finite: deliver each slot's final partial sequence padded with PAD
    slot_split: str = "windows"   # "windows": slots read whole windows; "sequences": whole seq_len sequences
    max_patches: int | None = None  # fixed width of patch_lengths (None: the batch's maximum)
    cu_seqlens: bool = False
    return_source: bool = False
    use_threads: bool = False     # let pyarrow decode a row group with several threads

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.batch_size < 1 or self.shuffle_window < 1:
            raise ValueError(f"seq_len, batch_size and shuffle_window must be >= 1 (got {self})")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be None or >= 1, got {self.epochs}")
        if self.slot_split not in ("windows", "sequences"):
            raise ValueError(f"slot_split must be 'windows' or 'sequences', got {self.slot_split!r}")

    @property
    def align(self) -> int | None:
        """The sequence length slot shares are cut at (slot_split="sequences"), else None."""
        return self.seq_len if self.slot_split == "sequences" else None

    @property
    def order(self) -> dict:
        return {key: getattr(self, key) for key in ORDER_KEYS}


def _normalize_sources(sources) -> tuple[list[str], list[float]]:
    if isinstance(sources, (str, bytes)) or hasattr(sources, "__fspath__"):
        return [str(sources)], [1.0]
    if isinstance(sources, Mapping):
        return [str(p) for p in sources], [float(w) for w in sources.values()]
    pairs = [(s, 1.0) if isinstance(s, (str, bytes)) or hasattr(s, "__fspath__") else s for s in sources]
    return [str(p) for p, _ in pairs], [float(w) for _, w in pairs]


class _SourceStream:
    """One slot's sequences from one source: walks its intervals window by window and packs them."""

    def __init__(self, source: ManifestSource, plan: Plan, slot: int, num_slots: int, config: DataConfig,
                 saved: dict | None):
        self.source, self.config = source, config
        T = source.tokens_per_epoch
        position = None if saved is None else saved["position"]
        self._work = slot_work(plan, slot, num_slots, source.epoch, T, config.epochs, start_at=position,
                               align=config.align)
        self.sequences = 0 if saved is None else int(saved["sequences"])
        self.cur: int | None = None
        self.end = 0
        self._next_interval(position)
        self.rest = Fragment.empty(self.cur or 0)
        self.chunk: SequenceChunk | None = None
        self.k = 0
        self.prev_end: int | None = None
        self.window = None
        self.committed = (self.position(), self.sequences)

    def _next_interval(self, position: int | None = None) -> None:
        for a, b in self._work:
            start = a if position is None else max(a, position)
            if start < b:
                self.cur, self.end = start, b
                return
        self.cur = None

    def position(self) -> int | None:
        """Global position of the first token not yet taken (None: no work left at all)."""
        if self.chunk is not None and self.k < len(self.chunk):
            return int(self.chunk.positions[self.k])
        if len(self.rest):
            return self.rest.start
        return self.cur if self.cur is not None else self.end or None

    def _read_piece(self, prefix: Fragment) -> Fragment:
        """The next piece of the current interval (the part inside one window), after `prefix`."""
        T = self.source.tokens_per_epoch
        e, t = divmod(self.cur, T)
        order = self.source.epoch(e)
        j = order.window_at(t)
        w0, w1 = int(order.window_offsets[j]), int(order.window_offsets[j + 1])
        if self.window is None or (self.window.epoch, self.window.index) != (e, j):
            self.window = None
            self.window = self.source.read_window(e, j)
        stop = min(w1, self.end - e * T, w0 + self.window.document_end(t - w0 + PIECE_TOKENS))
        seam = self.prev_end is not None and self.prev_end != self.cur
        piece = self.window.fragment(t - w0, stop - w0, global_start=self.cur, seam=seam, prefix=prefix)
        if stop == w1:
            self.window = None  # done with it: free the memory before the next read
        self.prev_end = self.cur = e * T + stop
        if self.cur >= self.end:
            self._next_interval()
        return piece

    def has_next(self) -> bool:
        if self.chunk is not None and self.k < len(self.chunk):
            return True
        while self.cur is not None:
            piece_start, carried = self.cur, len(self.rest)
            chunk, self.rest = cut_sequences(self._read_piece(self.rest), self.config.seq_len,
                                             piece_start, carried)
            if len(chunk):
                self.chunk, self.k = chunk, 0
                return True
        if self.config.pad_last and len(self.rest):  # the end of a finite run: its partial sequence
            self.chunk, self.k = padded_sequence(self.rest, self.config.seq_len), 0
            self.rest = Fragment.empty(self.end)
            return True
        return False

    def next_bytes(self) -> int:
        return int(self.chunk.row_bytes[self.k])

    def take(self) -> tuple[SequenceChunk, int]:
        return self.take_many(1)[0]

    def take_many(self, n: int) -> list[tuple[SequenceChunk, int]]:
        """Up to n rows of the current chunk (at least one; call has_next first)."""
        n = min(n, len(self.chunk) - self.k)
        rows = [(self.chunk, k) for k in range(self.k, self.k + n)]
        self.k += n
        self.sequences += n
        return rows

    def commit(self) -> None:
        """Record what has been delivered (called when a batch is handed out)."""
        self.committed = (self.position(), self.sequences)


class _SlotStream:
    """The batches of one (rank, worker) slot, and its state after each of them."""

    def __init__(self, dataset: "PatchedDataset", slot: int, num_slots: int, plans: list[Plan],
                 saved: dict | None):
        self.slot, self.num_slots, self.plans = slot, num_slots, plans
        self.config = dataset.config
        self.sources = dataset.sources
        self.total_batches = self._even_total(plans, slot, num_slots, dataset.world_size)
        entries = saved["sources"] if saved else [None] * len(plans)
        self.streams = [_SourceStream(src, plan, slot, num_slots, self.config, entry)
                        for src, plan, entry in zip(self.sources, plans, entries)]
        taken = [int(e["taken"]) for e in entries] if saved else None
        self.scheduler = StrideScheduler(dataset.weights, list(taken) if taken else [])
        self.committed_taken = list(self.scheduler.taken)
        self.batches = int(saved["batches"]) if saved else 0

    def _even_total(self, plans: list[Plan], slot: int, num_slots: int, world_size: int) -> int | None:
        """With even_batches, the batches this slot yields in all, padding batches included (else None)."""
        c = self.config
        if c.epochs is None or not c.even_batches or len(plans) != 1:
            return None
        src = self.sources[0]
        tokens = all_work_tokens(plans[0], num_slots, src.epoch, src.tokens_per_epoch, c.epochs, c.align)
        return int(even_batch_counts(tokens, world_size, c)[slot])

    def _pick(self) -> int | None:
        available = [s.has_next() for s in self.streams]
        if len(available) > 1 and not all(available):
            return None  # a finite mixture ends with its first exhausted source: proportions stay exact
        return self.scheduler.pick(available)

    def _rows(self) -> tuple[list[tuple[SequenceChunk, int]], list[int]]:
        """Up to batch_size rows for the next batch, and the source of each."""
        rows, picked = [], []
        while len(rows) < self.config.batch_size:
            i = self._pick()
            if i is None:
                break
            if len(self.streams) > 1:
                self.scheduler.consume(i, self.streams[i].next_bytes())
                taken = [self.streams[i].take()]
            else:  # one source: take as many rows as the chunk holds at once
                taken = self.streams[i].take_many(self.config.batch_size - len(rows))
            rows.extend(taken)
            picked.extend([i] * len(taken))
        return rows, picked

    def __iter__(self) -> Iterator[tuple[PackedBatch, dict]]:
        c = self.config
        while True:
            rows, picked = self._rows()
            if not rows or (len(rows) < c.batch_size and c.drop_last):
                break
            batch = pack_rows(rows)
            extras = {"source": np.asarray(picked, dtype=np.int64)} if c.return_source else {}
            for stream in self.streams:
                stream.commit()
            self.committed_taken = list(self.scheduler.taken)
            self.batches += 1
            yield batch, extras
            if len(rows) < c.batch_size:
                break
        while self.total_batches is not None and self.batches < self.total_batches:
            self.batches += 1  # even_batches: this rank has fewer batches than another one
            extras = {"source": np.full(c.batch_size, -1, dtype=np.int64)} if c.return_source else {}
            yield padding_batch(c.batch_size, c.seq_len), extras

    def state(self) -> dict:
        return {
            "format": STATE_FORMAT, "kind": "slot", "slot": self.slot, "num_slots": self.num_slots,
            "order": self.config.order, "align": self.config.align, "batches": self.batches,
            "sources": [{"manifest": src.path, "fingerprint": src.fingerprint, "plan": plan.to_dict(),
                         "position": stream.committed[0], "sequences": stream.committed[1], "taken": taken}
                        for src, plan, stream, taken in zip(self.sources, self.plans, self.streams,
                                                            self.committed_taken)],
        }


def slot_batch_counts(work_tokens: np.ndarray, config: DataConfig) -> np.ndarray:
    """Batches each slot makes of its finite work (tokens per slot), before any padding batch."""
    L, B = config.seq_len, config.batch_size
    sequences = work_tokens // L + ((work_tokens % L > 0) if config.pad_last else 0)
    return sequences // B if config.drop_last else -(-sequences // B)


def even_batch_counts(work_tokens: np.ndarray, world_size: int, config: DataConfig) -> np.ndarray:
    """Per slot (rank-major), its batches plus the padding batches that give every rank as many
    batches as the rank with most; a rank's padding goes to its workers with fewest batches."""
    counts = slot_batch_counts(work_tokens, config).reshape(world_size, -1).copy()
    target = int(counts.sum(axis=1).max())
    for rank in counts:
        for _ in range(target - int(rank.sum())):
            rank[int(np.argmin(rank))] += 1
    return counts.reshape(-1)


def expand_batch(packed: PackedBatch, options: dict, extras: dict) -> dict[str, Any]:
    """The batch as the training loop sees it: int64 torch tensors (plus `source`, `_state` if asked)."""
    batch: dict[str, Any] = {k: torch.from_numpy(v) for k, v in packed.arrays(**options).items()}
    for key, value in extras.items():
        batch[key] = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
    return batch


class _FromWorker:
    """A batch leaving a DataLoader worker: pickled compact, expanded when the main process unpickles it."""

    def __init__(self, packed: PackedBatch, options: dict, extras: dict):
        self.args = (packed, options, extras)

    def __reduce__(self):
        return expand_batch, self.args


class SlotIterator:
    """Iterates one slot's batches in this process; `state()` is the slot state after the last one."""

    def __init__(self, dataset: "PatchedDataset", stream: "_SlotStream"):
        self._dataset, self.stream = dataset, stream
        self._batches = iter(stream)
        self.streams = stream.streams

    def __iter__(self) -> "SlotIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        packed, extras = next(self._batches)
        options = {"max_patches": self._dataset.config.max_patches, "cu_seqlens": self._dataset.config.cu_seqlens}
        return expand_batch(packed, options, extras)

    def state(self) -> dict:
        return self.stream.state()


class PatchedDataset(IterableDataset):
    """Packed, patch-aware batches from one or more shard directories (see the module docstring).

    `sources`: a shard directory (or its manifest.json), a list of them, or a mapping / list of
    (directory, weight) pairs for weighted mixing by bytes. `rank` and `world_size` are passed
    explicitly; the worker index comes from the DataLoader.
    """

    def __init__(self, sources, config: DataConfig | None = None, *, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.config = config or DataConfig()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        paths, self.weights = _normalize_sources(sources)
        if not paths:
            raise ValueError("no shard directories given")
        c = self.config
        self.sources = [ManifestSource(p, seed=c.seed, shuffle=c.shuffle, shuffle_window=c.shuffle_window,
                                       use_threads=c.use_threads) for p in paths]
        StrideScheduler(self.weights)  # validates the weights
        self._resume: Resume | None = None
        self._merged: Resume | None = None
        self._live: _SlotStream | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_live"] = None  # an iteration in progress stays in its process (spawned workers pickle us)
        return state

    # ------------------------------------------------------------------ layout

    def _slot(self, worker: int | None = None, num_workers: int | None = None) -> tuple[int, int]:
        """(slot, num_slots) of this process: rank-major, shifted when resuming a plain DataLoader."""
        if worker is None:
            info = get_worker_info()
            worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self.resume_first_worker(num_workers)) % num_workers
        return self.rank * num_workers + worker, self.world_size * num_workers

    def _start(self, slot: int, num_slots: int) -> tuple[list[Plan], dict | None]:
        r = self._resume
        if r is None:
            return [Plan() for _ in self.sources], None
        if r.slots is None:
            return r.plans, None
        if r.num_slots == num_slots and r.align == self.config.align:
            if slot not in r.slots:
                raise StateError(f"the loaded state has no entry for slot {slot} of {num_slots} "
                                 f"(rank {self.rank}); load this rank's own state, or all ranks' states")
            return r.plans, r.slots[slot]
        if self._merged is None:
            self._merged = merged(r, self.sources, self.config.epochs)
            log.info("elastic resume: %d old slots merged for %d new slots", r.num_slots, num_slots)
        return self._merged.plans, None

    def slot_stream(self, worker: int = 0, num_workers: int = 1) -> "SlotIterator":
        """The batches of one worker of this rank, built directly in this process (tests and tools;
        a DataLoader does this itself in each worker). Has `.state()` like the dataset."""
        slot, num_slots = self._slot(worker, num_workers)
        plans, saved = self._start(slot, num_slots)
        return SlotIterator(self, _SlotStream(self, slot, num_slots, plans, saved))

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict]:
        """This process's batches. A loaded state applies to the next iteration only: later ones
        start the run from its beginning, as they would had the state never been loaded (and as
        an uninterrupted loader's next pass does)."""
        return self._iterate(with_states=False)

    def with_states(self) -> "BatchesWithStates":
        """This dataset as an IterableDataset whose batches also carry their slot's state after
        them, as `batch["_state"]` (what `ResumableLoader` hands to a DataLoader). The dataset
        itself is unchanged: other iterations of it yield plain batches."""
        return BatchesWithStates(self)

    def _iterate(self, *, with_states: bool) -> Iterator[dict]:
        slot, num_slots = self._slot()
        plans, saved = self._start(slot, num_slots)
        self._live = _SlotStream(self, slot, num_slots, plans, saved)
        self.forget_resume()
        return self._tensors(self._live, with_states)

    def resume_first_worker(self, num_workers: int) -> int:
        """The worker whose batch comes first in the next iteration of a plain DataLoader with
        `num_workers` workers: the one after the last batch of the loaded state when it was saved
        by a loader of as many workers (`ResumableLoader`), else 0."""
        r = self._resume
        return r.shift[1] if r is not None and r.shift is not None and r.shift[0] == num_workers else 0

    def forget_resume(self) -> None:
        """Drop the loaded state: the next iteration starts the run from its beginning."""
        self._resume = self._merged = None

    def _tensors(self, stream: _SlotStream, with_states: bool) -> Iterator[dict]:
        in_worker = get_worker_info() is not None
        options = {"max_patches": self.config.max_patches, "cu_seqlens": self.config.cu_seqlens}
        for packed, extras in stream:
            if with_states:
                extras["_state"] = stream.state()
            yield _FromWorker(packed, options, extras) if in_worker else expand_batch(packed, options, extras)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """The state of this process's slot after the last batch it yielded (a 'slot' state)."""
        if self._live is None:
            slot, num_slots = self._slot()
            plans, saved = self._start(slot, num_slots)
            return _SlotStream(self, slot, num_slots, plans, saved).state()
        return self._live.state()

    def load_state_dict(self, state: Any) -> None:
        """Resume from a slot, rank or global state, a StatefulDataLoader state, or a list of them.

        Refuses states saved for other shards (manifest fingerprint) or another order.
        """
        self._resume = resume_from(state, self.sources, self.config.order, self.config.epochs)
        self._merged = None
        self._live = None

    # ------------------------------------------------------------------ sizes

    @property
    def tokens_per_epoch(self) -> int:
        return sum(src.tokens_per_epoch for src in self.sources)

    def batches_per_epoch(self) -> int:
        """Batches per rank that deliver about one epoch of tokens (all sources together).

        The same for any number of workers; in the infinite mode, a training loop that runs this
        many steps per nominal epoch reads every token about once per epoch, and whatever a slot
        has not reached yet comes first in the next one.
        """
        c = self.config
        return self.tokens_per_epoch // (self.world_size * c.batch_size * c.seq_len)


class BatchesWithStates(IterableDataset):
    """A PatchedDataset's batches, each with its slot's state after it as `batch["_state"]`
    (`PatchedDataset.with_states`). Workers iterate their copy of it as they would the dataset."""

    def __init__(self, dataset: PatchedDataset):
        super().__init__()
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict]:
        return self.dataset._iterate(with_states=True)


class ResumableLoader:
    """A plain `torch.utils.data.DataLoader` over a PatchedDataset that can save its position.

    Every batch carries its slot's state from the worker; the loader keeps the latest one per
    worker for the batches *handed to the training loop* (prefetched ones are not counted) and
    which worker yields next, so `state_dict()` after n batches resumes at batch n + 1 exactly.
    `torchdata.stateful_dataloader.StatefulDataLoader(dataset, batch_size=None, ...)` works
    without this wrapper.
    """

    def __init__(self, dataset: PatchedDataset, *, num_workers: int = 0, **loader_kwargs):
        self.dataset = dataset
        self.num_workers = num_workers
        self.loader_kwargs = loader_kwargs
        self._states: dict[int, dict] | None = None  # None: where the next iteration would start
        self._next = 0

    def _logical_workers(self) -> int:
        return max(1, self.num_workers)

    def _starting_point(self) -> tuple[dict[int, dict], int]:
        """Each worker's state and the next worker at the start of the next iteration (a loaded state, or
        the beginning of the run)."""
        k = self._logical_workers()
        first = [self.dataset.slot_stream(w, k).state() for w in range(k)]
        return {int(st["slot"]) - self.dataset.rank * k: st for st in first}, self.dataset.resume_first_worker(k)

    def __iter__(self) -> Iterator[dict]:
        from torch.utils.data import DataLoader

        k = self._logical_workers()
        self._states, self._next = self._starting_point()
        batches = iter(DataLoader(self.dataset.with_states(), batch_size=None, num_workers=self.num_workers,
                                  **self.loader_kwargs))
        self.dataset.forget_resume()  # the workers (or the iterator) hold it now: used once
        for batch in batches:
            state = batch.pop("_state")
            worker = int(state["slot"]) - self.dataset.rank * k
            self._states[worker] = state
            self._next = (worker + 1) % k
            yield batch
        self._states = None  # the pass is over: a state saved now starts the next one

    def state_dict(self) -> dict:
        """Where this loader stands: after the last batch handed out, or — before the first batch, or
        after a pass has ended — where its next iteration starts."""
        states, next_worker = (self._states, self._next) if self._states is not None else self._starting_point()
        return {"format": STATE_FORMAT, "kind": "rank", "rank": self.dataset.rank,
                "world_size": self.dataset.world_size, "num_workers": self._logical_workers(),
                "next_worker": next_worker, "slots": [states[w] for w in sorted(states)]}

    def load_state_dict(self, state: Any) -> None:
        self.dataset.load_state_dict(state)
