"""Deterministic weighted mixing of several sources by bytes (a stride scheduler).

Each packed sequence is taken from one source. Source i has weight w_i and a counter
`taken[i]` of document bytes (BOS/EOS excluded) already delivered from it; the next sequence
comes from the source with the smallest `taken[i] / w_i` (ties: lowest index). After any
number of sequences, `taken[i] / w_i` differ between sources by at most one sequence's bytes
over its weight, so the long-run byte proportions are exactly the weights and the error is
bounded, never random. The only state is the list of counters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class StrideScheduler:
    weights: Sequence[float]
    taken: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.weights or any(not (w > 0) for w in self.weights):
            raise ValueError(f"mixing weights must be positive, got {list(self.weights)}")
        total = float(sum(self.weights))
        self.weights = [float(w) / total for w in self.weights]
        if not self.taken:
            self.taken = [0] * len(self.weights)
        if len(self.taken) != len(self.weights):
            raise ValueError(f"{len(self.taken)} counters for {len(self.weights)} sources")

    def pick(self, available: Sequence[bool]) -> int | None:
        """The source the next sequence comes from, among the available ones (None if none)."""
        best, best_pass = None, 0.0
        for i, ok in enumerate(available):
            if ok:
                pass_i = self.taken[i] / self.weights[i]
                if best is None or pass_i < best_pass:
                    best, best_pass = i, pass_i
        return best

    def consume(self, source: int, nbytes: int) -> None:
        self.taken[source] += int(nbytes)

    def proportions(self) -> list[float]:
        total = sum(self.taken)
        return [t / total if total else 0.0 for t in self.taken]
