"""The global order of a shard set and how it is split among (rank, worker) slots.

Everything here is a pure function of the manifest, the seed and the epoch — never of the
world size or the number of workers — except `split_indices`, which cuts that one order into
per-slot ranges.

The model: each epoch `e` of a source is one long *token stream*. Its row groups are put in a
seeded random order (`permutation(N, seed, fingerprint, e)`), grouped into *windows* of
`shuffle_window` consecutive row groups, and each window's documents are shuffled among
themselves. Each document contributes `num_bytes + 2` tokens (BOS, its bytes, EOS), so the
token length of every row group and window is known from the manifest alone. A *global
position* `G = e * T + t` (T = tokens per epoch) names one token of the infinite stream of
epochs; a slot's work is a list of half-open `[a, b)` intervals of G, in increasing order.

Epoch `e` is split among S slots at window boundaries (each slot reads whole windows, and so
whole row groups), choosing the boundary nearest to `s * T / S`, so slots get equal shares up
to one window (a data set with fewer windows than slots is cut at equal token counts). After an elastic resume the not-yet-consumed ranges of the old slots
(`Plan.pending`) are shared out first, then the untouched epochs follow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (wrapping uint64 arithmetic): a fixed, version-independent hash."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def key64(*parts: int) -> int:
    """Fold integers (any size, non-negative) into one 64-bit key."""
    k = np.zeros(1, dtype=np.uint64)
    for part in parts:
        part = int(part)
        while True:
            with np.errstate(over="ignore"):
                k = _mix64(k + _GOLDEN + np.uint64(part & 0xFFFFFFFFFFFFFFFF))
            part >>= 64
            if not part:
                break
    return int(k[0])


def permutation(n: int, *key: int) -> np.ndarray:
    """A seeded permutation of range(n) (int64) that depends only on n and the key.

    Built from a fixed hash rather than numpy's Generator so that the order of a data set can
    never change with the numpy version.
    """
    base = np.uint64(key64(*key))
    with np.errstate(over="ignore"):
        scores = _mix64(np.arange(n, dtype=np.uint64) * _GOLDEN + base)
    return np.argsort(scores, kind="stable").astype(np.int64)


def fingerprint_key(fingerprint: str) -> int:
    """The manifest fingerprint (hex digest) as an integer key for the order."""
    return int(fingerprint[:32], 16) if fingerprint else 0


@dataclass(frozen=True)
class EpochOrder:
    """One epoch of a source: row groups in order, and windows as token offsets."""

    epoch: int
    order: np.ndarray            # (N,) flat row-group ids in stream order
    window_offsets: np.ndarray   # (n_windows + 1,) token offset of each window start, last = T
    shuffle_window: int

    @property
    def num_windows(self) -> int:
        return len(self.window_offsets) - 1

    def window_row_groups(self, j: int) -> np.ndarray:
        w = self.shuffle_window
        return self.order[j * w:(j + 1) * w]

    def window_at(self, t: int) -> int:
        """The window holding token offset t (0 <= t < T)."""
        return int(np.searchsorted(self.window_offsets, t, side="right")) - 1


def epoch_order(row_group_tokens: np.ndarray, epoch: int, *, seed: int, fingerprint: str,
                shuffle: bool, shuffle_window: int) -> EpochOrder:
    """The row-group order and window offsets of one epoch."""
    n = len(row_group_tokens)
    order = permutation(n, seed, fingerprint_key(fingerprint), epoch, 1) if shuffle else np.arange(n)
    tokens = row_group_tokens[order]
    starts = np.arange(0, n, shuffle_window)
    per_window = np.add.reduceat(tokens, starts) if n else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_window)]).astype(np.int64)
    return EpochOrder(epoch, order, offsets, shuffle_window)


def nearest_boundaries(cumulative: np.ndarray, parts: int, *, nonempty: bool) -> np.ndarray:
    """Cut items with the given cumulative sizes (len n + 1) into `parts` contiguous groups.

    Returns `parts + 1` item indices; boundary s is the item boundary nearest to
    `s * total / parts`. With `nonempty`, every group gets at least one item (needs n >= parts).
    """
    n = len(cumulative) - 1
    total = int(cumulative[-1])
    targets = np.arange(1, parts, dtype=np.int64) * total // parts
    j = np.searchsorted(cumulative, targets, side="left")
    below = np.clip(j - 1, 0, n)
    take_below = (j > 0) & ((targets - cumulative[below]) <= (cumulative[np.minimum(j, n)] - targets))
    j = np.where(take_below, below, np.minimum(j, n))
    j = np.maximum.accumulate(np.concatenate([[0], j]))[1:] if len(j) else j
    if nonempty:
        if n < parts:
            raise ValueError(f"cannot give {parts} slots one window each out of {n} windows")
        s = np.arange(1, parts)
        k = np.minimum(np.maximum.accumulate(np.maximum(j - s, 0)), n - parts)
        j = k + s
    return np.concatenate([[0], j, [n]]).astype(np.int64)


def split_indices(window_offsets: np.ndarray, num_slots: int) -> np.ndarray:
    """Window index boundaries of each slot's share of one epoch (num_slots + 1 values)."""
    return nearest_boundaries(window_offsets, num_slots, nonempty=True)


def epoch_bounds(window_offsets: np.ndarray, num_slots: int, align: int | None = None) -> np.ndarray:
    """Token offsets (num_slots + 1) of each slot's share of one epoch.

    At window boundaries when there are at least as many windows as slots, so that every
    window is read whole by one slot. A data set with fewer windows than slots (a small
    held-out set, say) is cut at equal token counts instead: a boundary may then fall inside a
    document, whose two parts go to neighbouring slots.

    With `align` (a sequence length L), every boundary is a multiple of L instead — each slot
    gets whole L-token sequences of the epoch's one stream (the last one gets the final,
    partial sequence) — so the sequences are the same whatever the number of slots, and a
    slot may get none. Evaluation uses this: its result must not depend on the world size.
    """
    total = int(window_offsets[-1])
    if align is not None:
        sequences = -(-total // align)
        bounds = np.arange(num_slots + 1, dtype=np.int64) * sequences // num_slots * align
        return np.minimum(bounds, total)
    if len(window_offsets) - 1 >= num_slots:
        return window_offsets[split_indices(window_offsets, num_slots)]
    if total < num_slots:
        raise ValueError(f"{total} tokens cannot be shared among {num_slots} slots (world_size x workers)")
    return np.arange(num_slots + 1, dtype=np.int64) * total // num_slots


@dataclass(frozen=True)
class Plan:
    """What a job still has to read of one source, before its untouched epochs.

    `pending` lists global-position intervals left over by a previous job (elastic resume),
    shared out among the new slots first; then epochs `start_epoch, start_epoch + 1, ...` are
    split as usual. A fresh job has `Plan()`.
    """

    start_epoch: int = 0
    pending: tuple[tuple[int, int], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"start_epoch": self.start_epoch, "pending": [list(p) for p in self.pending]}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(int(d["start_epoch"]), tuple((int(a), int(b)) for a, b in d["pending"]))


EpochLookup = Callable[[int], EpochOrder]


def _pieces(intervals: Sequence[tuple[int, int]], epochs: EpochLookup, tokens_per_epoch: int) -> list[tuple[int, int]]:
    """Cut intervals at window boundaries, so that no piece straddles two windows."""
    pieces = []
    for a, b in intervals:
        e = a // tokens_per_epoch
        base = e * tokens_per_epoch
        cuts = epochs(e).window_offsets + base
        inner = cuts[(cuts > a) & (cuts < b)].tolist()
        bounds = [a] + inner + [b]
        pieces.extend(zip(bounds[:-1], bounds[1:]))
    return pieces


def _coalesce(pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in pieces:
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def pending_shares(plan: Plan, num_slots: int, epochs: EpochLookup,
                   tokens_per_epoch: int) -> list[list[tuple[int, int]]]:
    """Each slot's contiguous share (by tokens, cut at window boundaries) of `plan.pending`."""
    if not plan.pending:
        return [[] for _ in range(num_slots)]
    pieces = _pieces(plan.pending, epochs, tokens_per_epoch)
    sizes = np.array([b - a for a, b in pieces], dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    bounds = nearest_boundaries(cumulative, num_slots, nonempty=False)
    return [_coalesce(pieces[bounds[s]:bounds[s + 1]]) for s in range(num_slots)]


def slot_work(plan: Plan, slot: int, num_slots: int, epochs: EpochLookup, tokens_per_epoch: int,
              max_epochs: int | None = None, start_at: int | None = None,
              align: int | None = None) -> Iterator[tuple[int, int]]:
    """The intervals of global positions that one slot reads, in order (infinite if max_epochs is None).

    With `start_at`, intervals that end at or before it are skipped without computing their
    epochs' orders (resuming late in a long run stays cheap). `align`: see `epoch_bounds`.
    """
    for a, b in pending_shares(plan, num_slots, epochs, tokens_per_epoch)[slot]:
        if start_at is None or b > start_at:
            yield a, b
    e = plan.start_epoch if start_at is None else max(plan.start_epoch, start_at // tokens_per_epoch)
    while max_epochs is None or e < max_epochs:
        bounds = epoch_bounds(epochs(e).window_offsets, num_slots, align)
        a, b = int(bounds[slot]), int(bounds[slot + 1])
        base = e * tokens_per_epoch
        if b > a and (start_at is None or base + b > start_at):
            yield base + a, base + b
        e += 1


def remaining_work(plan: Plan, slot: int, num_slots: int, epochs: EpochLookup, tokens_per_epoch: int,
                   position: int | None, *, before_epoch: int, max_epochs: int | None,
                   align: int | None = None) -> list[tuple[int, int]]:
    """The part of a slot's work at or after `position` and before epoch `before_epoch`."""
    limit = before_epoch * tokens_per_epoch
    out = []
    for a, b in slot_work(plan, slot, num_slots, epochs, tokens_per_epoch, max_epochs, start_at=position,
                          align=align):
        if a >= limit:
            break
        start = a if position is None else max(a, position)
        if start < b:
            out.append((start, b))
    return out


def position_epoch(plan: Plan, slot: int, num_slots: int, epochs: EpochLookup, tokens_per_epoch: int,
                   position: int | None, max_epochs: int | None, align: int | None = None) -> int:
    """The epoch of the interval a slot is reading at `position` (its first, if None)."""
    for a, b in slot_work(plan, slot, num_slots, epochs, tokens_per_epoch, max_epochs, start_at=position,
                          align=align):
        if position is None or position < b:
            return a // tokens_per_epoch
    return max_epochs if max_epochs is not None else plan.start_epoch


def merge_plans(plan: Plan, positions: Sequence[int | None], epochs: EpochLookup, tokens_per_epoch: int,
                max_epochs: int | None, align: int | None = None) -> Plan:
    """The plan of a new job that continues where every slot of the old job stopped.

    `positions[s]` is the first global position old slot s had not yet delivered. Every
    epoch some old slot had started is finished through `pending`; later epochs are untouched.
    """
    num_slots = len(positions)
    started = [position_epoch(plan, s, num_slots, epochs, tokens_per_epoch, p, max_epochs, align)
               for s, p in enumerate(positions)]
    next_epoch = max([plan.start_epoch] + [e + 1 for e in started])
    if max_epochs is not None:
        next_epoch = min(next_epoch, max(max_epochs, plan.start_epoch))
    pending = []
    for s, p in enumerate(positions):
        pending.extend(remaining_work(plan, s, num_slots, epochs, tokens_per_epoch, p,
                                      before_epoch=next_epoch, max_epochs=max_epochs, align=align))
    return Plan(next_epoch, tuple(_coalesce(sorted(pending))))


def all_work_tokens(plan: Plan, num_slots: int, epochs: EpochLookup, tokens_per_epoch: int,
                    max_epochs: int, align: int | None = None) -> np.ndarray:
    """Total tokens of every slot's (finite) work, (num_slots,) int64, without per-slot loops over epochs."""
    totals = np.zeros(num_slots, dtype=np.int64)
    for s, share in enumerate(pending_shares(plan, num_slots, epochs, tokens_per_epoch)):
        totals[s] += sum(b - a for a, b in share)
    for e in range(plan.start_epoch, max_epochs):
        totals += np.diff(epoch_bounds(epochs(e).window_offsets, num_slots, align))
    return totals
