"""Shard format v1: the Parquet schema, writer, reader, manifest and validator (docs/design.md §5).

This module owns the on-disk format. Everything that writes shards (the Beam pipeline,
`repatch`, `import-blt-arrow`) goes through `ShardWriter` and `write_manifest`; everything
that checks them (`bltdata verify`, the tests) goes through `validate`.

A shard is one Parquet file (zstd, page checksums on) with one row per document. Rows are
buffered and flushed as a row group once they hold `row_group_bytes` of document bytes, so a
DataLoader worker can take a row group (a few MB) at a time. Nothing written depends on the
clock, so the same inputs give byte-identical files.

Layout: a shard directory `OUT/` holds `manifest.json`, `rejected/` and `.bltdata/`; the shards
go in `OUT/data/`, which holds nothing else, so every Parquet reader (pyarrow, polars, duckdb,
HF `datasets`) opens `OUT/data` as a dataset. Files appear atomically: a shard is written under
`OUT/.bltdata/staging/` (same filesystem) and renamed into `data/` when complete — a crash never
leaves a temporary file in `data/` — and the manifest is written last. The manifest records
the shards' directory (`data_dir`); manifests of format version 1 (written before `data/`)
have the shards beside them, and are still read (`Manifest.shard_path` resolves both).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bltdata import __version__, fs
from bltdata.arrow import binary_flat, list_flat
from bltdata.fs import sha256_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 2  # 2: `data_dir` names the shards' directory; 1: shards beside the manifest
READABLE_FORMAT_VERSIONS = (1, 2)
REJECTED_DIR = "rejected"
DATA_DIR = "data"          # OUT/data/: the shards and nothing else
STATE_DIR = ".bltdata"     # OUT/.bltdata/: job state and write temporaries
STAGING_DIR = "staging"    # OUT/.bltdata/staging/: shards being written
SHARD_SUFFIX = ".parquet"
DEFAULT_ROW_GROUP_BYTES = 4 << 20
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

META_SCHEMA_VERSION = b"bltdata.schema_version"
META_PATCHER = b"bltdata.patcher"
META_ENTROPY_MODEL = b"bltdata.entropy_model"
META_VERSION = b"bltdata.version"

_BASE_FIELDS = [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("bytes", pa.binary(), nullable=False),
    pa.field("num_bytes", pa.int64(), nullable=False),
    pa.field("patch_lengths", pa.list_(pa.field("item", pa.int32(), nullable=False)), nullable=False),
    pa.field("num_patches", pa.int32(), nullable=False),
]
_ENTROPY_FIELD = pa.field("entropies", pa.list_(pa.field("item", pa.float16(), nullable=False)), nullable=True)


def stored_precision(entropies: np.ndarray) -> np.ndarray:
    """Entropies rounded to float16 (as shards store them), back in float32.

    The pipeline patches on these rounded values, so patching the entropies stored in a
    shard (`bltdata repatch`) reproduces its boundaries exactly; it also makes it rare that
    floating-point noise (batch composition, device) moves a boundary: only a value that
    straddles a float16 rounding edge can change.
    """
    return np.asarray(entropies, dtype=np.float32).astype(np.float16).astype(np.float32)


def shard_schema(store_entropies: bool, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    """The Arrow schema of a v1 shard, with or without the optional `entropies` column."""
    fields = _BASE_FIELDS + ([_ENTROPY_FIELD] if store_entropies else [])
    return pa.schema(fields, metadata=metadata)


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def shard_metadata(patcher: dict, entropy_model: dict | None) -> dict[bytes, bytes]:
    """The key-value metadata stored on every shard."""
    return {
        META_SCHEMA_VERSION: SCHEMA_VERSION.encode(),
        META_PATCHER: _canonical_json(patcher).encode(),
        META_ENTROPY_MODEL: _canonical_json(entropy_model).encode(),
        META_VERSION: __version__.encode(),
    }


def data_path(out_dir: str | os.PathLike) -> str:
    """The shards' directory of a shard directory written in the current layout."""
    return fs.join(out_dir, DATA_DIR)


def staging_path(out_dir: str | os.PathLike) -> str:
    """Where the shards of `out_dir` are written before they are renamed into place."""
    return fs.join(out_dir, STATE_DIR, STAGING_DIR)


@dataclass
class ShardInfo:
    """One shard as the manifest lists it."""

    file: str
    rows: int
    bytes: int
    patches: int
    row_groups: int
    size: int
    sha256: str
    row_group_rows: list[int] = field(default_factory=list)
    row_group_bytes: list[int] = field(default_factory=list)
    row_group_sha256: list[str] = field(default_factory=list)  # see `row_group_digest`; absent in old manifests

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShardInfo":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ShardWriter:
    """Writes one shard atomically; rows are added one document at a time.

    `add` takes the document's bytes, its patch lengths (int32, summing to len(data)) and,
    when the shard stores them, its n + 1 entropies. `close` flushes, renames the temporary
    file to its final name and returns the `ShardInfo` for the manifest; `abort` removes it.
    The temporary file is an `fs.AtomicWrite`: beside the shard, or in `staging_dir`
    (`staging_path(OUT)` for a shard of OUT/data). As a context manager the writer closes on
    success (the info in `.info`) and aborts on any exception.
    """

    def __init__(self, path: str | os.PathLike, *, patcher: dict, entropy_model: dict | None = None,
                 store_entropies: bool = False, row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
                 staging_dir: str | os.PathLike | None = None):
        self.path = str(path)
        self.store_entropies = store_entropies
        self.row_group_bytes = row_group_bytes
        self.schema = shard_schema(store_entropies, shard_metadata(patcher, entropy_model))
        self._output = fs.AtomicWrite(self.path, staging_dir=staging_dir)
        self._tmp = Path(self._output.temporary)
        try:
            self._writer = pq.ParquetWriter(
                self._tmp, self.schema, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                write_page_checksum=True, write_statistics=["num_bytes", "num_patches"],
                use_dictionary=_DICTIONARY_COLUMNS,
            )
        except BaseException:
            self._output.discard()
            raise
        self._pending: dict[str, list] = {name: [] for name in self.schema.names}
        self._pending_bytes = 0
        self._rows = self._bytes = self._patches = 0
        self._row_group_rows: list[int] = []
        self._row_group_bytes: list[int] = []
        self.info: ShardInfo | None = None  # set by close()

    def add(self, doc_id: str, source: str, data: bytes, patch_lengths, entropies=None) -> None:
        lengths = np.asarray(patch_lengths, dtype=np.int32)
        check_row(doc_id, len(data), lengths, None if entropies is None else len(entropies))
        if self.store_entropies and entropies is None:
            raise ValueError(f"{self.path}: document {doc_id!r} has no entropies but the shard stores them")
        row = self._pending
        row["doc_id"].append(doc_id)
        row["source"].append(source)
        row["bytes"].append(bytes(data))
        row["num_bytes"].append(len(data))
        row["patch_lengths"].append(lengths)
        row["num_patches"].append(len(lengths))
        if self.store_entropies:
            row["entropies"].append(np.asarray(entropies, dtype=np.float16))
        self._pending_bytes += len(data)
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        n = len(self._pending["doc_id"])
        if n == 0:
            return
        columns = [_column(name, self._pending[name], self.schema.field(name).type) for name in self.schema.names]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._writer.write_table(table, row_group_size=n)
        self._row_group_rows.append(n)
        self._row_group_bytes.append(self._pending_bytes)
        self._rows += n
        self._bytes += self._pending_bytes
        self._patches += int(sum(self._pending["num_patches"]))
        self._pending = {name: [] for name in self.schema.names}
        self._pending_bytes = 0

    def close(self) -> ShardInfo:
        try:
            info = self._finish()
        except BaseException:
            self.abort()
            raise
        self._output.commit()
        return info

    def _finish(self) -> ShardInfo:
        self._flush()
        self._writer.close()
        size = self._tmp.stat().st_size
        digest = sha256_file(self._tmp)
        with pa.memory_map(str(self._tmp)) as mapped:
            metadata = pq.read_metadata(mapped)
            row_group_sha256 = [row_group_digest(mapped, metadata, i) for i in range(metadata.num_row_groups)]
        return ShardInfo(
            file=fs.basename(self.path), rows=self._rows, bytes=self._bytes, patches=self._patches,
            row_groups=len(self._row_group_rows), size=size, sha256=digest,
            row_group_rows=self._row_group_rows, row_group_bytes=self._row_group_bytes,
            row_group_sha256=row_group_sha256,
        )

    def abort(self) -> None:
        """Drop a shard that will not be completed: nothing appears under the final name."""
        try:
            self._writer.close()
        finally:
            self._output.discard()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.info = self.close()
        else:
            self.abort()


# Dictionary encoding pays off for repeated values; on `bytes` and `doc_id` it only builds a
# large dictionary page and falls back (reads measured ~20 % slower with it).
_DICTIONARY_COLUMNS = ["source", "patch_lengths", "num_patches", "entropies"]
_NUMPY_TYPES = {pa.int32(): np.int32, pa.float16(): np.float16}


def _column(name: str, values: list, type_: pa.DataType) -> pa.Array:
    """Build one column; list columns are assembled from flat numpy buffers (no per-item boxing)."""
    if pa.types.is_list(type_):
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(values) if values else np.zeros(0)
        child = pa.array(flat.astype(_NUMPY_TYPES[type_.value_type], copy=False), type=type_.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), child, type=type_)
    return pa.array(values, type=type_)


def check_row(doc_id: str, num_bytes: int, patch_lengths: np.ndarray, num_entropies: int | None) -> None:
    """Raise ValueError if a document's patch lengths or entropies break the v1 invariants."""
    total = int(patch_lengths.sum()) if len(patch_lengths) else 0
    if total != num_bytes:
        raise ValueError(f"document {doc_id!r}: patch lengths sum to {total}, not its {num_bytes} bytes")
    if len(patch_lengths) and int(patch_lengths.min()) < 1:
        raise ValueError(f"document {doc_id!r}: a patch length is < 1")
    if num_entropies is not None and num_entropies != num_bytes + 1:
        raise ValueError(f"document {doc_id!r}: {num_entropies} entropies, expected {num_bytes + 1} (n + 1)")


# ----------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """`manifest.json`: the run's parameters, the shards and their totals."""

    params: dict
    shards: list[ShardInfo]
    rejected: int
    patcher: dict | None = None
    entropy_model: dict | None = None
    fingerprint: str = ""
    path: Path | None = None
    declared_totals: dict | None = None  # the totals as written in the file (`totals` recomputes them)
    data_dir: str = ""  # the shards' directory, relative to the manifest's ("": beside it, format 1)

    @property
    def totals(self) -> dict:
        return {
            "shards": len(self.shards),
            "documents": sum(s.rows for s in self.shards),
            "bytes": sum(s.bytes for s in self.shards),
            "patches": sum(s.patches for s in self.shards),
            "row_groups": sum(s.row_groups for s in self.shards),
            "size": sum(s.size for s in self.shards),
            "rejected": self.rejected,
        }

    @property
    def directory(self) -> Path:
        """The job directory: the manifest's own (it holds `rejected/` and `.bltdata/`)."""
        assert self.path is not None, "manifest was not read from disk"
        return self.path.parent

    @property
    def shard_dir(self) -> Path:
        """The directory holding the shards: `OUT/data`, or `OUT` itself in the old layout."""
        return self.directory / self.data_dir if self.data_dir else self.directory

    def shard_path(self, shard: ShardInfo) -> Path:
        """Where a listed shard is: every reader of a manifest's shards goes through this."""
        return self.shard_dir / shard.file


def manifest_fingerprint(shards: Iterable[ShardInfo]) -> str:
    """A digest of what the shards hold: names, row counts and checksums."""
    listing = [[s.file, s.rows, s.row_groups, s.sha256] for s in sorted(shards, key=lambda s: s.file)]
    return hashlib.sha256(_canonical_json(listing).encode()).hexdigest()


def write_manifest(out_dir: str | os.PathLike, params: dict, shards: list[ShardInfo], rejected: int,
                   *, data_dir: str, patcher: dict | None = None, entropy_model: dict | None = None) -> Manifest:
    """Write `OUT/manifest.json` atomically; call it after every shard is in place.

    `data_dir` is where the shards are, relative to `out_dir`: `DATA_DIR` for the current
    layout, "" for shards beside the manifest (a job begun before `data/` existed).
    """
    if data_dir_problem(data_dir):
        raise ValueError(f"{out_dir}: data_dir {data_dir!r} {data_dir_problem(data_dir)}")
    shards = sorted(shards, key=lambda s: s.file)
    manifest = Manifest(params=params, shards=shards, rejected=rejected, patcher=patcher,
                        entropy_model=entropy_model, fingerprint=manifest_fingerprint(shards), data_dir=data_dir)
    doc = {
        "format": "bltdata.manifest",
        "format_version": MANIFEST_FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "bltdata_version": __version__,
        "data_dir": data_dir,
        "params": params,
        "patcher": patcher,
        "entropy_model": entropy_model,
        "totals": manifest.totals,
        "fingerprint": manifest.fingerprint,
        "shards": [s.to_dict() for s in shards],
    }
    path = fs.join(out_dir, MANIFEST_NAME)
    fs.write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    manifest.path = None if fs.is_remote(path) else Path(path)
    return manifest


def data_dir_problem(data_dir) -> str | None:
    """Why `data_dir` cannot name a shard directory inside the job directory (None: it can)."""
    if not isinstance(data_dir, str):
        return "is not a string"
    if data_dir and (Path(data_dir).name != data_dir or data_dir.startswith(".") or "\\" in data_dir):
        return "is not a plain directory name inside the job directory"
    return None


class ManifestError(ValueError):
    """A manifest that contradicts itself (shard list vs totals or fingerprint): it was edited."""


def manifest_problems(manifest: Manifest) -> list[str]:
    """What a manifest says that its own shard list contradicts (empty when consistent).

    Checks the fingerprint and the totals against the shard list, and every shard's rows, bytes
    and row groups against its per-row-group lists; names must be plain, distinct file names.
    """
    problems = []
    if manifest.fingerprint != manifest_fingerprint(manifest.shards):
        problems.append("fingerprint does not match the shard list")
    declared = manifest.declared_totals or {}
    for key, value in manifest.totals.items():
        if declared.get(key) != value:
            problems.append(f"totals.{key} is {declared.get(key)!r} but the shard list adds up to {value!r}")
    names = [s.file for s in manifest.shards]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"shard {name} is listed more than once")
    for shard in manifest.shards:
        problems.extend(f"shard {shard.file}: {p}" for p in _shard_entry_problems(shard))
    return problems


def _shard_entry_problems(shard: ShardInfo) -> list[str]:
    problems = []
    if not isinstance(shard.file, str) or Path(shard.file).name != shard.file or shard.file.startswith("."):
        problems.append("the file name is not a plain shard name in this directory")
    lists = {"row_group_rows": shard.row_group_rows, "row_group_bytes": shard.row_group_bytes,
             "row_group_sha256": shard.row_group_sha256}
    for key, values in lists.items():
        if values and len(values) != shard.row_groups:
            problems.append(f"{len(values)} {key} for {shard.row_groups} row groups")
    for key, values in (("rows", shard.row_group_rows), ("bytes", shard.row_group_bytes)):
        if values and sum(values) != getattr(shard, key):
            problems.append(f"{key} is {getattr(shard, key)} but row_group_{key} adds up to {sum(values)}")
    return problems


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest of a shard directory given as `OUT`, `OUT/data` or `OUT/manifest.json`.

    `OUT/data` (a directory named `DATA_DIR` with no manifest of its own) finds the manifest
    one level up, so every command takes the Parquet dataset directory as well as the job's.
    """
    p = Path(path)
    if p.name == MANIFEST_NAME:
        return p
    if p.name == DATA_DIR and not (p / MANIFEST_NAME).exists() and (p.parent / MANIFEST_NAME).exists():
        return p.parent / MANIFEST_NAME
    return p / MANIFEST_NAME


def _remote_manifest_path(path: str) -> str:
    """`manifest_path` for a remote directory (`gs://.../OUT`, `.../OUT/data` or the manifest)."""
    path = path.rstrip("/")
    if fs.basename(path) == MANIFEST_NAME:
        return path
    own = fs.join(path, MANIFEST_NAME)
    if fs.basename(path) == DATA_DIR and not fs.exists(own):
        return fs.join(path.rsplit("/", 1)[0], MANIFEST_NAME)
    return own


def read_manifest(path: str | os.PathLike, *, check: bool = True) -> Manifest:
    """Read a shard directory's manifest (local or remote); errors name the file and what is wrong.

    With `check` (the default) a manifest that contradicts itself (`manifest_problems`) is
    refused with `ManifestError`; `validate` reads it unchecked and reports each problem.
    """
    remote = fs.is_remote(path)
    mpath = _remote_manifest_path(str(path)) if remote else manifest_path(path)
    try:
        doc = json.loads(fs.read_text(str(mpath)) if remote else Path(mpath).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{mpath}: no manifest (is {Path(mpath).parent} a bltdata shard directory?)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath}: manifest is not valid JSON: {e}") from None
    if doc.get("format") != "bltdata.manifest" or doc.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ValueError(f"{mpath}: not a bltdata manifest of format version "
                         f"{' or '.join(map(str, READABLE_FORMAT_VERSIONS))} (found {doc.get('format_version')!r})")
    try:
        shards = [ShardInfo.from_dict(s) for s in doc["shards"]]
        data_dir = doc["data_dir"] if doc["format_version"] >= 2 else ""  # format 1: shards beside it
        if data_dir_problem(data_dir):
            raise ValueError(f"data_dir {data_dir!r} {data_dir_problem(data_dir)}")
        manifest = Manifest(params=doc.get("params", {}), shards=shards, rejected=int(doc["totals"]["rejected"]),
                            patcher=doc.get("patcher"), entropy_model=doc.get("entropy_model"),
                            fingerprint=doc["fingerprint"], path=None if remote else Path(mpath),
                            declared_totals=dict(doc["totals"]), data_dir=data_dir)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{mpath}: manifest lacks or mangles a field ({type(e).__name__}: {e})") from None
    problems = manifest_problems(manifest) if check else []
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ManifestError(f"{mpath}: refusing a manifest that contradicts itself: {'; '.join(problems[:3])}{more} "
                            f"(edited since it was written? `bltdata verify` lists every problem)")
    return manifest


def rejects_path(out_dir: str | os.PathLike, name: str) -> str:
    """`OUT/rejected/<name>.jsonl`: the rejected records of one pack (or converted input)."""
    return fs.join(out_dir, REJECTED_DIR, f"{name}.jsonl")


def write_rejects(out_dir: str | os.PathLike, name: str, rejects: Iterable[dict]) -> int:
    """Write rejected records as JSON lines to `rejected/<name>.jsonl` (atomically); returns the count."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rejects]
    if not lines:
        return 0
    fs.makedirs(fs.join(out_dir, REJECTED_DIR))
    fs.write_text_atomic(rejects_path(out_dir, name), "\n".join(lines) + "\n")
    return len(lines)


# ----------------------------------------------------------------------------- reading


def open_shard(path: str | os.PathLike | pa.NativeFile) -> pq.ParquetFile:
    """Open a shard (a path, or a file already memory-mapped) for reading: page checksums verified."""
    return pq.ParquetFile(path, memory_map=True, page_checksum_verification=True)


DIGEST_COLUMNS = ("bytes", "patch_lengths")  # what the loader reads


def row_group_digest(mapped: pa.NativeFile, metadata: pq.FileMetaData, index: int) -> str:
    """sha256 of row group `index`'s `bytes` and `patch_lengths` column chunks as stored.

    The chunks' raw bytes (page headers and compressed pages, in file order) — exactly what the
    loader decodes — hashed straight from the memory map: about 2 % of the cost of decoding
    them, so the loader checks every row group it reads against the manifest's `row_group_sha256`.
    """
    digest = hashlib.sha256()
    group = metadata.row_group(index)
    for j in range(group.num_columns):
        column = group.column(j)
        if column.path_in_schema.split(".")[0] in DIGEST_COLUMNS:
            start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
            digest.update(mapped.read_at(column.total_compressed_size, start))
    return digest.hexdigest()


def shard_files(directory: str | os.PathLike) -> list[Path]:
    """The shards of a directory, from its manifest when there is one, else by listing."""
    d = Path(directory)
    if d.is_file():
        return [d]
    if manifest_path(d).exists():
        manifest = read_manifest(d)
        return [manifest.shard_path(s) for s in manifest.shards]
    found = sorted(p for p in d.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))
    if not found and (d / DATA_DIR).is_dir():  # a job directory whose manifest is not written yet
        return shard_files(d / DATA_DIR)
    return found


def iter_rows(path: str | os.PathLike, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of one shard as dicts (`bytes` as bytes, lists as Python lists), in file order."""
    pf = open_shard(path)
    for i in range(pf.num_row_groups):
        for row in pf.read_row_group(i, columns=columns).to_pylist():
            yield row


def read_metadata(path: str | os.PathLike) -> dict:
    """The bltdata key-value metadata of one shard, decoded."""
    meta = pq.read_schema(path).metadata or {}
    out = {}
    for key in (META_SCHEMA_VERSION, META_PATCHER, META_ENTROPY_MODEL, META_VERSION):
        if key in meta:
            value = meta[key].decode()
            out[key.decode().split(".", 1)[1]] = json.loads(value) if key in (META_PATCHER, META_ENTROPY_MODEL) else value
    return out


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """One thing `validate` found wrong: the file, optionally the row, and what."""

    file: str
    message: str
    row: int | None = None
    doc_id: str | None = None

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row} (doc_id {self.doc_id!r})"
        return f"{where}: {self.message}"


MAX_ROW_PROBLEMS = 20


def validate(path: str | os.PathLike) -> list[Problem]:
    """Check a shard directory (manifest, checksums, every shard) or a single shard file.

    For a directory, every figure the manifest holds is checked: its totals and fingerprint
    against its shard list, and each shard's size, sha256, rows, bytes, patches, row groups and
    per-row-group rows, bytes and sha256 against the shard itself.
    """
    p = Path(path)
    if p.is_file() and p.name != MANIFEST_NAME:
        return validate_shard(p)
    if not p.exists():
        return [Problem(str(p), "does not exist")]
    if not manifest_path(p).exists():
        return [Problem(str(manifest_path(p)), "missing: not a complete bltdata shard directory")]
    try:
        manifest = read_manifest(p, check=False)
    except (ValueError, KeyError, TypeError) as e:
        return [Problem(str(manifest_path(p)), f"unreadable manifest: {e}")]
    return _validate_manifest(manifest)


def _validate_manifest(manifest: Manifest) -> list[Problem]:
    problems = [Problem(str(manifest.path), message) for message in manifest_problems(manifest)]
    problems.extend(_unlisted_files(manifest))
    rejected = _count_rejected(manifest.directory)
    if rejected != manifest.rejected:
        problems.append(Problem(str(manifest.path), f"manifest counts {manifest.rejected} rejected records, "
                                                    f"{REJECTED_DIR}/ holds {rejected}"))
    for shard in manifest.shards:
        problems.extend(_validate_listed_shard(manifest, shard))
    return problems


def _unlisted_files(manifest: Manifest) -> list[Problem]:
    """Shards on disk the manifest does not list; in `data/`, anything that is not a listed shard
    (Parquet readers opening the directory would read it, or refuse the directory)."""
    listed = {s.file for s in manifest.shards}
    if not manifest.data_dir:
        return [Problem(str(manifest.directory / extra), "shard on disk is not in the manifest")
                for extra in sorted({p.name for p in manifest.directory.glob(f"*{SHARD_SUFFIX}")} - listed)]
    if not manifest.shard_dir.is_dir():
        return [Problem(str(manifest.shard_dir), "the manifest's data directory is missing")] if listed else []
    problems = []
    for entry in sorted(manifest.shard_dir.iterdir()):
        if entry.name in listed and entry.is_file():
            continue
        if entry.is_file() and entry.suffix == SHARD_SUFFIX and not entry.name.startswith("."):
            problems.append(Problem(str(entry), "shard on disk is not in the manifest"))
        else:
            problems.append(Problem(str(entry), f"not a shard: {manifest.data_dir}/ must hold only the shards "
                                                f"(Parquet readers opening the directory fail on other files)"))
    return problems


def _count_rejected(directory: Path) -> int:
    total = 0
    for f in sorted((directory / REJECTED_DIR).glob("*.jsonl")):
        with open(f, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


@dataclass
class ShardFigures:
    """What one shard actually holds, per row group (what the manifest's figures must equal)."""

    rows: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    patches: list[int] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)


def _validate_listed_shard(manifest: Manifest, shard: ShardInfo) -> list[Problem]:
    path = manifest.shard_path(shard)
    name = str(path)
    if not path.exists():
        return [Problem(name, "listed in the manifest but missing")]
    size_problem = shard_size_problem(shard, path.stat().st_size)
    if size_problem:
        return [Problem(name, size_problem)]
    if sha256_file(path) != shard.sha256:
        return [Problem(name, "sha256 differs from the manifest (file corrupted or replaced)")]
    problems, figures = scan_shard(path)
    if problems:
        return problems
    return [Problem(name, message) for message in _figure_problems(shard, figures)]


def shard_size_problem(shard: ShardInfo, size: int) -> str | None:
    """Why a listed shard whose file has `size` bytes is not the one its manifest entry describes
    (None: the sizes agree). The one size check: `validate` reports it, the loader raises it, and a
    resumed job redoes a pack whose shard fails it (`jobs.read_done`)."""
    if size == shard.size:
        return None
    return f"size {size} differs from the manifest's {shard.size} (truncated or replaced?)"


def _figure_problems(shard: ShardInfo, figures: ShardFigures) -> list[str]:
    """Every figure of a manifest entry that differs from what the shard holds."""
    problems = []
    totals = {"rows": sum(figures.rows), "bytes": sum(figures.bytes), "patches": sum(figures.patches),
              "row_groups": len(figures.rows)}
    for key, actual in totals.items():
        if getattr(shard, key) != actual:
            problems.append(f"the manifest lists {key} {getattr(shard, key)}, the shard holds {actual}")
    per_group = {"row_group_rows": figures.rows, "row_group_bytes": figures.bytes,
                 "row_group_sha256": figures.sha256}
    for key, actual in per_group.items():
        listed = getattr(shard, key)
        if listed and listed != actual:
            first = next((i for i, (a, b) in enumerate(zip(listed, actual)) if a != b), min(len(listed), len(actual)))
            problems.append(f"the manifest's {key} differs from the shard's from row group {first} on "
                            f"({len(listed)} listed, {len(actual)} in the shard)")
    return problems


def validate_shard(path: str | os.PathLike) -> list[Problem]:
    """Schema, metadata and per-row invariants of one shard file."""
    return scan_shard(path)[0]


def scan_shard(path: str | os.PathLike) -> tuple[list[Problem], ShardFigures]:
    """Read a whole shard: the problems found (schema, metadata, rows) and its per-row-group figures."""
    name = str(path)
    figures = ShardFigures()
    try:
        mapped = pa.memory_map(str(path))
        pf = open_shard(mapped)
    except (OSError, pa.ArrowException) as e:
        return [Problem(name, f"not a readable Parquet file: {e}")], figures
    problems = _check_schema(name, pf.schema_arrow)
    if problems:
        return problems, figures
    first_row = 0
    for i in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(i)
        except (OSError, pa.ArrowException) as e:
            return problems + [Problem(name, f"row group {i} unreadable: {e}")], figures
        problems.extend(_check_rows(name, table, first_row))
        if len(problems) >= MAX_ROW_PROBLEMS:
            return problems[:MAX_ROW_PROBLEMS] + [Problem(name, "more problems not shown")], figures
        first_row += table.num_rows
        figures.rows.append(table.num_rows)
        figures.bytes.append(int(pc.sum(table.column("num_bytes")).as_py() or 0))
        figures.patches.append(int(pc.sum(table.column("num_patches")).as_py() or 0))
        figures.sha256.append(row_group_digest(mapped, pf.metadata, i))
    return problems, figures


def _check_schema(name: str, schema: pa.Schema) -> list[Problem]:
    problems = []
    meta = schema.metadata or {}
    if meta.get(META_SCHEMA_VERSION) != SCHEMA_VERSION.encode():
        found = meta.get(META_SCHEMA_VERSION, b"<missing>").decode(errors="replace")
        problems.append(Problem(name, f"bltdata.schema_version is {found!r}, expected {SCHEMA_VERSION!r}"))
    for key in (META_PATCHER, META_ENTROPY_MODEL, META_VERSION):
        if key not in meta:
            problems.append(Problem(name, f"key-value metadata {key.decode()!r} missing"))
    expected = shard_schema("entropies" in schema.names)
    for f in expected:
        if f.name not in schema.names:
            problems.append(Problem(name, f"column {f.name!r} missing"))
        elif not schema.field(f.name).type.equals(f.type):
            problems.append(Problem(name, f"column {f.name!r} has type {schema.field(f.name).type}, expected {f.type}"))
    extra = set(schema.names) - set(expected.names)
    if extra:
        problems.append(Problem(name, f"unexpected columns {sorted(extra)}"))
    return problems


def _check_rows(name: str, table: pa.Table, first_row: int) -> list[Problem]:
    """Vectorised per-row invariants of one row group."""
    t = table.combine_chunks()
    actual_bytes = np.diff(binary_flat(t.column("bytes"))[1])
    num_bytes = t.column("num_bytes").to_numpy()
    values, list_offsets = list_flat(t.column("patch_lengths"))
    values = values.astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(values)])
    sums = cumulative[list_offsets[1:]] - cumulative[list_offsets[:-1]]
    min_len = values.min() if len(values) else 1
    num_patches = t.column("num_patches").to_numpy()
    bad = (actual_bytes != num_bytes) | (sums != num_bytes) | (np.diff(list_offsets) != num_patches)
    if min_len < 1:
        owner = np.searchsorted(list_offsets, np.flatnonzero(values < 1), side="right") - 1
        bad[owner] = True
    if "entropies" in t.column_names:
        entropies = t.column("entropies")
        n_ent = np.diff(list_flat(entropies)[1])
        bad |= entropies.is_null().to_numpy(zero_copy_only=False) | (n_ent != num_bytes + 1)
    return [_row_problem(name, t, first_row, int(i), actual_bytes, num_bytes, sums, list_offsets, num_patches)
            for i in np.flatnonzero(bad)[:MAX_ROW_PROBLEMS]]


def _row_problem(name, t, first_row, i, actual_bytes, num_bytes, sums, list_offsets, num_patches) -> Problem:
    doc_id = t.column("doc_id")[i].as_py()
    reasons = []
    if actual_bytes[i] != num_bytes[i]:
        reasons.append(f"num_bytes {num_bytes[i]} but the document has {actual_bytes[i]} bytes")
    if sums[i] != num_bytes[i]:
        reasons.append(f"patch lengths sum to {sums[i]}, not num_bytes {num_bytes[i]}")
    if list_offsets[i + 1] - list_offsets[i] != num_patches[i]:
        reasons.append(f"num_patches {num_patches[i]} but {list_offsets[i + 1] - list_offsets[i]} patch lengths")
    if not reasons:
        reasons.append("a patch length < 1, or entropies missing / not num_bytes + 1 values")
    return Problem(name, "; ".join(reasons), row=first_row + i, doc_id=doc_id)


# ----------------------------------------------------------------------------- summary


def summarize(path: str | os.PathLike) -> dict:
    """Totals of a shard directory (from its manifest) or of one shard file (from its columns)."""
    p = Path(path)
    if p.is_dir() or p.name == MANIFEST_NAME:
        manifest = read_manifest(p)
        totals = manifest.totals
        patcher, model, params = manifest.patcher, manifest.entropy_model, manifest.params
    else:
        pf = open_shard(p)
        counts = pf.read(columns=["num_bytes", "num_patches"])
        meta = read_metadata(p)
        totals = {"shards": 1, "documents": pf.metadata.num_rows,
                  "bytes": int(pc.sum(counts.column("num_bytes")).as_py() or 0),
                  "patches": int(pc.sum(counts.column("num_patches")).as_py() or 0),
                  "row_groups": pf.num_row_groups, "size": p.stat().st_size, "rejected": None}
        patcher, model, params = meta.get("patcher"), meta.get("entropy_model"), None
    mean = totals["bytes"] / totals["patches"] if totals["patches"] else None
    return {**totals, "mean_patch_bytes": mean, "patcher": patcher, "entropy_model": model, "params": params}
