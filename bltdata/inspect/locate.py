"""Find documents in a shard directory: global index or doc id → shard, row group, row.

The global index of a document is its 0-based position when the shards are read in the
manifest's order (`bltdata.shards.shard_files`) and each shard row by row. Row counts come
from the Parquet footers, so locating a document reads no data; looking one up by doc id
reads only the `doc_id` column, one row group at a time.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.compute as pc

from bltdata.shards import open_shard, shard_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """Where one document lives."""

    index: int          # global 0-based index over the manifest's shard order
    shard: str          # path of the shard file
    row_group: int
    row: int            # 0-based row within the shard
    row_in_group: int
    doc_id: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def list_shards(path: str | os.PathLike) -> list[Path]:
    """The shards of a directory (manifest order) or the one shard named; errors name the path."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    files = shard_files(p)
    if not files:
        raise FileNotFoundError(f"{p}: no shards (*.parquet) found")
    return files


def row_group_sizes(shard: Path) -> list[int]:
    """Rows in each row group of one shard, from its footer."""
    meta = open_shard(shard).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _locations(path) -> Iterator[tuple[Path, int, int, int, int]]:
    """(shard, row group, first global index, first row in shard, rows) for every row group."""
    index = 0
    for shard in list_shards(path):
        row = 0
        for group, rows in enumerate(row_group_sizes(shard)):
            yield shard, group, index, row, rows
            index += rows
            row += rows


def count_documents(path) -> int:
    return sum(rows for *_, rows in _locations(path))


def _describe(shard: Path, group: int, first_index: int, first_row: int, offset: int) -> Location:
    table = open_shard(shard).read_row_group(group, columns=["doc_id", "source"]).slice(offset, 1)
    row = table.to_pylist()[0]
    return Location(index=first_index + offset, shard=str(shard), row_group=group, row=first_row + offset,
                    row_in_group=offset, doc_id=row["doc_id"], source=row["source"])


def locate(path, index: int) -> Location:
    """The document at a global index; IndexError (with the document count) when out of range."""
    if index < 0:
        raise IndexError(f"index {index} is negative")
    total = 0
    for shard, group, first_index, first_row, rows in _locations(path):
        if index < first_index + rows:
            return _describe(shard, group, first_index, first_row, index - first_index)
        total = first_index + rows
    raise IndexError(f"index {index} out of range: {path} holds {total} documents (0..{total - 1})")


def find_doc(path, doc_id: str) -> Location:
    """The first document whose doc_id equals `doc_id`; KeyError naming the directory if none."""
    for shard, group, first_index, first_row, rows in _locations(path):
        ids = open_shard(shard).read_row_group(group, columns=["doc_id"]).column("doc_id")
        hit = pc.index(ids, doc_id).as_py()
        if hit >= 0:
            return _describe(shard, group, first_index, first_row, hit)
    raise KeyError(f"{path}: no document with doc_id {doc_id!r}")


def read_document(location: Location, columns: list[str] | None = None) -> dict:
    """One row of a shard as a dict (`bytes` as bytes, lists as Python lists)."""
    pf = open_shard(location.shard)
    if columns is not None:
        columns = [c for c in columns if c in pf.schema_arrow.names]
    table = pf.read_row_group(location.row_group, columns=columns).slice(location.row_in_group, 1)
    return table.to_pylist()[0]


def head(path, k: int, columns: list[str]) -> list[dict]:
    """The first k documents (global order), each with its `index` and the columns asked for."""
    out: list[dict] = []
    for shard, group, first_index, first_row, rows in _locations(path):
        if len(out) >= k:
            break
        table = open_shard(shard).read_row_group(group, columns=columns).slice(0, k - len(out))
        for offset, row in enumerate(table.to_pylist()):
            out.append({"index": first_index + offset, "shard": str(shard), "row": first_row + offset, **row})
    return out
