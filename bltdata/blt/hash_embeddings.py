"""Hash n-gram byte embeddings (BLT paper §3.2.1).

Every byte position also looks up, for each n-gram size n (3..8 by default), an embedding
indexed by a hash of the n ids ending at that position. The hash follows the convention of
the reference BLT so that its tables could be reused: the window of ids is left-padded with
n-1 zeros, the oldest id is multiplied by p^0, the next by p^1, ..., the current id by
p^(n-1), the products are summed in int64 with two's-complement wrap-around, and the index
is that sum floor-modulo the table size. Hash function f uses prime ``HASH_PRIMES[f]`` for
every n.

Unlike the reference we also zero ids that belong to an earlier document of a packed row
(``doc_ids``), so a document's hash ids are the same whether it is packed or alone.
"""
from __future__ import annotations

import torch
from torch import nn

HASH_PRIMES = (
    1000000007, 5915587277, 1500450271, 3267000013, 5754853343, 4093082899,
    9576890767, 3628273133, 2860486313, 5463458053, 3367900313,
)


def _wrap_int64(value: int) -> int:
    """An exact Python int reduced to the signed int64 it wraps to."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _prime_powers(prime: int, n: int) -> list[int]:
    """p^0 .. p^(n-1), each wrapped to int64 (so torch multiplications wrap the same way)."""
    return [_wrap_int64(prime**k) for k in range(n)]


def rolling_hash_ids(
    ids: torch.Tensor, n: int, table_size: int, function: int = 0, doc_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Hash-table index (int64, in [0, table_size)) of the n-gram ending at each position.

    ``ids``: (B, T) int64 token ids; positions before the row start count as id 0, and so do
    positions of another document when ``doc_ids`` (B, T) is given.
    """
    if ids.dtype != torch.int64:
        raise TypeError(f"ids must be int64, got {ids.dtype}")
    windows = torch.nn.functional.pad(ids, (n - 1, 0), value=0).unfold(1, n, 1)  # (B, T, n), oldest first
    if doc_ids is not None:
        doc_windows = torch.nn.functional.pad(doc_ids, (n - 1, 0), value=-1).unfold(1, n, 1)
        windows = windows.masked_fill(doc_windows != doc_ids.unsqueeze(-1), 0)
    powers = torch.tensor(_prime_powers(HASH_PRIMES[function], n), dtype=torch.int64, device=ids.device)
    hashed = (windows * powers).sum(-1)  # int64 arithmetic wraps around
    return torch.remainder(hashed, table_size)  # floor modulo: always >= 0


def reference_hash_id(window: list[int], table_size: int, function: int = 0) -> int:
    """Plain-Python hash of one window of ids (oldest first): the definition, for tests."""
    prime = HASH_PRIMES[function]
    total = sum(token * prime**k for k, token in enumerate(window))
    return _wrap_int64(total) % table_size


class HashNgramEmbedding(nn.Module):
    """Sum of hash n-gram embeddings over n in ``ngram_sizes`` and ``functions`` hash functions.

    ``table_size``: one size for every n, or one per n (in ``ngram_sizes`` order). Tables are
    ordered function-major (f0: n=3..8, f1: n=3..8, ...), the reference's order.
    """

    def __init__(self, dim: int, ngram_sizes: tuple[int, ...], table_size: int | tuple[int, ...], functions: int = 1):
        super().__init__()
        if functions > len(HASH_PRIMES):
            raise ValueError(f"at most {len(HASH_PRIMES)} hash functions, got {functions}")
        self.ngram_sizes = tuple(ngram_sizes)
        sizes = tuple(table_size) if isinstance(table_size, (tuple, list)) else (table_size,) * len(self.ngram_sizes)
        self.table_sizes = dict(zip(self.ngram_sizes, sizes))
        self.functions = functions
        self.tables = nn.ModuleList(nn.Embedding(self.table_sizes[n], dim) for _, n in self._pairs())

    def forward(self, ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = None
        for i, (function, n) in enumerate(self._pairs()):
            hashed = rolling_hash_ids(ids, n, self.table_sizes[n], function, doc_ids)
            emb = self.tables[i](hashed)
            out = emb if out is None else out + emb
        return out  # (B, T, dim)

    def _pairs(self):
        return [(f, n) for f in range(self.functions) for n in self.ngram_sizes]

