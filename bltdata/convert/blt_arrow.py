"""Export to, and import from, the reference BLT's Arrow layout (`sample_id`, `text`, `entropies`).

The reference code trains from Arrow IPC files in the *file* format (it opens them with
`pyarrow.dataset(..., format="arrow")`), one row per document: `sample_id` string, `text`
string, `entropies` list<float16> with one value per token of ``[BOS] b0 .. b(n-1) [EOS]``,
i.e. n + 2 values. It looks for ``<data_dir>/<name>.chunk.<k>.jsonl.shard_<i>.arrow``, each
beside an empty ``.complete`` marker, where ``data_dir = preprocess_dir/<dataset>/<entropy
model name>``.

Entropy alignment. In the reference, the value at token position t is the entropy of the
prediction made after reading tokens 0..t, and with ``include_next_token=False`` its patcher
starts a patch at token t ≥ 2 iff value[t - 1] > θ (tokens 0 and 1, BOS and the first
byte, always start one). Byte k is token k + 1, so byte k ≥ 1 starts a patch iff
value[k] > θ — exactly our rule with H[k]. Hence the mapping:

    reference value[j] = H[j]   for j = 0..n     (H[n]: the prediction of EOS)
    reference value[n + 1] = 0  (after EOS; never read by the reference patcher)

Import reverses it (value[0..n] → H[0..n]); files with n + 1 values per row (made without
EOS) are accepted too. Rows whose entropies have any other length are rejected with the
reason, into `rejected/`.

Round trip. Export adds two columns the reference ignores, `bltdata_source` and
`bltdata_patch_lengths` (leave them out with `reference_columns_only=True`), and records
the patcher, entropy model and shard name in the schema metadata. Import then rebuilds the
same shard names, documents, sources, entropies and — unless a new patcher is asked for —
the very same boundaries. Without the extra column, import re-patches from the float16
entropies (the recorded patcher by default).

Text. A `string` column holds UTF-8 only: documents whose bytes are not valid UTF-8 are
skipped on export and reported (id, shard, row) — never altered.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from bltdata import __version__, fs
from bltdata.arrow import list_flat
from bltdata.convert.repatch import DEFAULT_SAMPLE_BYTES, calibrated, prepare_output_dir, require_entropies
from bltdata.patching import DEFAULT_THRESHOLD, PatcherConfig, patch_batch
from bltdata.shards import (DATA_DIR, ShardInfo, ShardWriter, data_path, manifest_path, open_shard, read_manifest,
                            read_metadata, shard_files, staging_path, write_manifest, write_rejects)

log = logging.getLogger(__name__)

SOURCE_COLUMN = "bltdata_source"
PATCH_LENGTHS_COLUMN = "bltdata_patch_lengths"
META_PATCHER = b"bltdata.patcher"
META_ENTROPY_MODEL = b"bltdata.entropy_model"
META_SHARD = b"bltdata.shard"
META_VERSION = b"bltdata.version"
META_ALIGNMENT = b"bltdata.entropy_alignment"
ALIGNMENT = "value[j] = H[j] for j = 0..n (tokens BOS, b0..b(n-1)); value[n+1] = 0 (after EOS, unused)"
EXPORT_SUMMARY = "bltdata_export.json"
IMPORT_MODEL = {"name": "imported-blt-arrow", "preset": None, "sha256": None}


def reference_schema(extra_columns: bool, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [pa.field("sample_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False),
              pa.field("entropies", pa.list_(pa.float16()), nullable=False)]
    if extra_columns:
        fields += [pa.field(SOURCE_COLUMN, pa.string(), nullable=False),
                   pa.field(PATCH_LENGTHS_COLUMN, pa.list_(pa.int32()), nullable=False)]
    return pa.schema(fields, metadata=metadata)


def to_reference_entropies(h: np.ndarray) -> np.ndarray:
    """Our n + 1 values H[0..n] → the reference's n + 2 (one per token, BOS..EOS)."""
    return np.concatenate([np.asarray(h, dtype=np.float16), np.zeros(1, np.float16)])


def from_reference_entropies(values: np.ndarray, num_bytes: int) -> np.ndarray:
    """The reference's n + 2 (or n + 1) values → H[0..n]; ValueError for any other length."""
    if len(values) in (num_bytes + 2, num_bytes + 1):
        return np.asarray(values[:num_bytes + 1])
    raise ValueError(f"{len(values)} entropies for {num_bytes} bytes: expected {num_bytes + 2} "
                     f"(one per token, BOS..EOS) or {num_bytes + 1}")


# ----------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    out_dir: Path
    files: list[str] = field(default_factory=list)
    documents: int = 0
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": str(self.out_dir), "files": self.files, "documents": self.documents,
                "skipped": len(self.skipped), "skipped_documents": self.skipped}


def export_file_name(name: str, index: int, chunks: int) -> str:
    """Shard `index` (manifest order) → its reference file name; chunk = index mod chunks."""
    return f"{name}.chunk.{index % chunks:02d}.jsonl.shard_{index // chunks}.arrow"


def _export_metadata(shard: Path) -> dict[bytes, bytes]:
    meta = read_metadata(shard)
    return {META_PATCHER: json.dumps(meta.get("patcher"), sort_keys=True).encode(),
            META_ENTROPY_MODEL: json.dumps(meta.get("entropy_model"), sort_keys=True).encode(),
            META_SHARD: shard.name.encode(), META_VERSION: __version__.encode(),
            META_ALIGNMENT: ALIGNMENT.encode()}


def _with_trailing_zero(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's values followed by one 0 (our H[0..n] → the reference's n + 2 values)."""
    rows = len(offsets) - 1
    new_offsets = offsets + np.arange(rows + 1, dtype=np.int64)
    out = np.zeros(len(values) + rows, dtype=np.float16)
    keep = np.ones(len(out), dtype=bool)
    keep[new_offsets[1:] - 1] = False
    out[keep] = values
    return out, new_offsets


def _decode_texts(shard: Path, table: pa.Table, first_row: int, skipped: list[dict]) -> tuple[list[str], np.ndarray]:
    """UTF-8 text of every row ('' where invalid) and the mask of the valid rows."""
    texts, valid = [], np.ones(table.num_rows, dtype=bool)
    ids = table.column("doc_id").to_pylist()
    for i, data in enumerate(table.column("bytes").to_pylist()):
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            texts.append("")
            valid[i] = False
            skipped.append({"doc_id": ids[i], "shard": str(shard), "row": first_row + i,
                            "reason": f"not valid UTF-8 ({e.reason} at byte {e.start})"})
    return texts, valid


def _export_batch(shard: Path, table: pa.Table, first_row: int, schema: pa.Schema,
                  skipped: list[dict]) -> pa.RecordBatch:
    texts, valid = _decode_texts(shard, table, first_row, skipped)
    values, offsets = _with_trailing_zero(*list_flat(table.column("entropies")))
    entropies = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.float16()))
    arrays = [table.column("doc_id").combine_chunks(), pa.array(texts, pa.string()), entropies]
    if SOURCE_COLUMN in schema.names:
        arrays += [table.column("source").combine_chunks(),
                   table.column("patch_lengths").combine_chunks().cast(schema.field(PATCH_LENGTHS_COLUMN).type)]
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    return batch.filter(pa.array(valid))


def _export_shard(shard: Path, target: Path, extra: bool, skipped: list[dict]) -> int:
    schema = reference_schema(extra, _export_metadata(shard))
    columns = ["doc_id", "source", "bytes", "entropies", "patch_lengths"]
    written = first_row = 0
    pf = open_shard(shard)
    with fs.AtomicWrite(target) as tmp, pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=columns)
            batch = _export_batch(shard, table, first_row, schema, skipped)
            writer.write_batch(batch)
            written += batch.num_rows
            first_row += table.num_rows
    target.with_name(target.name + ".complete").touch()
    return written


def export_blt_arrow(src, out_dir, *, name: str = "bltdata", chunks: int = 1,
                     reference_columns_only: bool = False) -> ExportResult:
    """Write one reference Arrow IPC file (+ `.complete`) per shard of `src` (see module doc)."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    shards = shard_files(src)
    if not shards:
        raise FileNotFoundError(f"{src}: no shards (*.parquet) found")
    require_entropies(shards, PatcherConfig())
    out = prepare_output_dir(out_dir, [Path(src)])
    result = ExportResult(out_dir=out)
    for index, shard in enumerate(shards):
        target = out / export_file_name(name, index, chunks)
        result.documents += _export_shard(shard, target, not reference_columns_only, result.skipped)
        result.files.append(target.name)
    summary = {"format": "blt-arrow", "source": str(src), "alignment": ALIGNMENT, **result.to_dict()}
    summary["out"] = out.name
    if manifest_path(src).exists():
        summary["source_fingerprint"] = read_manifest(src).fingerprint
    fs.write_json_atomic(str(out / EXPORT_SUMMARY), summary, indent=1)
    return result


# ----------------------------------------------------------------------------- import


@dataclass
class ImportResult:
    out_dir: Path
    patcher: dict
    shards: list[ShardInfo] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": str(self.out_dir), "patcher": self.patcher, "shards": len(self.shards),
                "documents": sum(s.rows for s in self.shards), "patches": sum(s.patches for s in self.shards),
                "rejected": len(self.rejected), "rejected_records": self.rejected}


def open_arrow(path: Path) -> pa.ipc.RecordBatchFileReader | pa.ipc.RecordBatchStreamReader:
    """An Arrow IPC file, in the file format (what the reference writes) or the stream format."""
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid as e:
        raise ValueError(f"{path}: not an Arrow IPC file or stream: {e}") from None


def _batches(reader) -> Iterator[pa.RecordBatch]:
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def _check_columns(path: Path, schema: pa.Schema) -> None:
    missing = [c for c in ("sample_id", "text", "entropies") if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: not the reference BLT Arrow layout: columns {missing} missing "
                         f"(has {schema.names})")


def _file_metadata(schema: pa.Schema, key: bytes):
    raw = (schema.metadata or {}).get(key)
    return json.loads(raw) if raw else None


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    source: str
    position: int           # 0-based row in its input file
    data: bytes
    entropies: np.ndarray   # H[0..n], float16
    stored_lengths: np.ndarray | None


def _iter_docs(path: Path, rejected: list[dict]) -> Iterator[list[_Doc]]:
    """Valid documents of one file, a record batch at a time; bad rows go to `rejected`."""
    reader = open_arrow(path)
    _check_columns(path, reader.schema)
    position = 0
    for batch in _batches(reader):
        yield _batch_docs(path, batch, position, rejected)
        position += batch.num_rows


def _entropy_lists(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat float16 values, offsets, per-row flag 'null list or a null value') of `entropies`."""
    values, offsets = list_flat(column)
    flat = column.values.slice(int(column.offsets[0].as_py()), len(values))
    nulls = np.concatenate([[0], np.cumsum(flat.is_null().to_numpy(zero_copy_only=False))])
    bad = (nulls[offsets[1:]] - nulls[offsets[:-1]] > 0) | column.is_null().to_numpy(zero_copy_only=False)
    return values.astype(np.float16), offsets, bad


def _batch_docs(path: Path, batch: pa.RecordBatch, first: int, rejected: list[dict]) -> list[_Doc]:
    ids = batch.column("sample_id").to_pylist()
    texts = batch.column("text").to_pylist()
    values, offsets, bad = _entropy_lists(batch.column("entropies"))
    sources = batch.column(SOURCE_COLUMN).to_pylist() if SOURCE_COLUMN in batch.schema.names else None
    lengths = (list_flat(batch.column(PATCH_LENGTHS_COLUMN)) if PATCH_LENGTHS_COLUMN in batch.schema.names
               else None)
    docs = []
    for i, text in enumerate(texts):
        doc_id = str(ids[i]) if ids[i] is not None else f"{path.name}:{first + i}"
        try:
            if text is None or bad[i]:
                raise ValueError("text is null" if text is None else "entropies are null")
            data = text.encode("utf-8")
            h = from_reference_entropies(values[offsets[i]:offsets[i + 1]], len(data))
        except ValueError as e:
            rejected.append({"source": str(path), "position": first + i, "doc_id": doc_id, "reason": str(e)})
            continue
        stored = None if lengths is None else lengths[0][lengths[1][i]:lengths[1][i + 1]]
        docs.append(_Doc(doc_id, (sources[i] if sources else None) or path.name, first + i, data, h, stored))
    return docs


def _patch_docs(config: PatcherConfig | None, docs: list[_Doc]) -> list[np.ndarray]:
    """Patch lengths per document: the stored ones when `config` is None, else re-patched."""
    if config is None:
        return [d.stored_lengths for d in docs]
    sizes = np.array([len(d.data) for d in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat_h = np.concatenate([d.entropies[:-1] for d in docs]).astype(np.float32) if docs else np.zeros(0, np.float32)
    data = np.frombuffer(b"".join(d.data for d in docs), np.uint8)
    lengths, patch_offsets = patch_batch(config, offsets, entropies=flat_h, data=data)
    return [lengths[patch_offsets[i]:patch_offsets[i + 1]] for i in range(len(docs))]


def _import_sample(files: list[Path], sample_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    values, sizes, total = [], [], 0
    for path in files:
        for docs in _iter_docs(path, []):
            for d in docs:
                values.append(d.entropies[:-1].astype(np.float32))
                sizes.append(len(d.data))
                total += len(d.data)
            if total >= sample_bytes:
                break
        if total >= sample_bytes:
            break
    offsets = np.concatenate([[0], np.cumsum(np.array(sizes, np.int64))]).astype(np.int64)
    return (np.concatenate(values) if values else np.zeros(0, np.float32)), offsets


def _output_names(files: list[Path]) -> list[str]:
    """Output shard names: the exported shard's own name when recorded (and unique), else numbered."""
    names = []
    for path in files:
        raw = (open_arrow(path).schema.metadata or {}).get(META_SHARD)
        names.append(raw.decode() if raw else None)
    if None in names or len(set(names)) != len(names):
        return [f"shard-{i:05d}.parquet" for i in range(len(files))]
    return names


@dataclass(frozen=True)
class ImportOptions:
    """How to patch imported documents. `overrides` are PatcherConfig fields the user gave;
    with none and no target size, stored boundaries (export's extra column) are kept."""

    overrides: dict = field(default_factory=dict)
    target_patch_size: float | None = None
    sample_bytes: int = DEFAULT_SAMPLE_BYTES
    entropy_model: dict | None = None


def _file_config(schema: pa.Schema, options: ImportOptions) -> PatcherConfig | None:
    """The patcher of one file, or None to keep its stored boundaries."""
    keep = not options.overrides and PATCH_LENGTHS_COLUMN in schema.names
    if keep:
        return None
    base = _file_metadata(schema, META_PATCHER) or {"mode": "entropy", "threshold": DEFAULT_THRESHOLD}
    return PatcherConfig.from_dict({**base, **options.overrides})


def _import_file(path: Path, out: Path, name: str, config: PatcherConfig | None, options: ImportOptions,
                 rejected: list[dict]) -> ShardInfo:
    schema = open_arrow(path).schema
    patcher = (config or PatcherConfig.from_dict(_file_metadata(schema, META_PATCHER) or {})).to_dict()
    model = options.entropy_model or _file_metadata(schema, META_ENTROPY_MODEL) or IMPORT_MODEL
    with ShardWriter(Path(data_path(out), name), patcher=patcher, entropy_model=model, store_entropies=True,
                     staging_dir=staging_path(out)) as writer:
        for docs in _iter_docs(path, rejected):
            for doc, lengths in zip(docs, _patch_docs(config, docs)):
                _add_imported(writer, path, doc, lengths, rejected)
    return writer.info


def _add_imported(writer: ShardWriter, path: Path, doc: _Doc, lengths, rejected: list[dict]) -> None:
    try:
        writer.add(doc.doc_id, doc.source, doc.data, lengths, doc.entropies)
    except ValueError as e:
        rejected.append({"source": str(path), "position": doc.position, "doc_id": doc.doc_id, "reason": str(e)})


def import_blt_arrow(files: list[Path], out_dir, options: ImportOptions = ImportOptions()) -> ImportResult:
    """Shards (+ manifest) from reference Arrow files: one shard per file, in the order given."""
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no input files")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file")
    schemas = [open_arrow(f).schema for f in files]
    configs = [_file_config(s, options) for s in schemas]
    if options.target_patch_size is not None:
        base = next((c for c in configs if c is not None), None) or PatcherConfig.from_dict(
            {**(_file_metadata(schemas[0], META_PATCHER) or {}), **options.overrides})
        tuned = calibrated(base, options.target_patch_size, *_import_sample(files, options.sample_bytes))
        configs = [tuned] * len(files)
    out = prepare_output_dir(out_dir, files)
    names = _output_names(files)
    result = ImportResult(out_dir=out, patcher={})
    for path, name, config in zip(files, names, configs):
        result.shards.append(_import_file(path, out, name, config, options, result.rejected))
    first = read_metadata(Path(data_path(out), names[0]))
    result.patcher = first.get("patcher")
    write_rejects(out, "import", result.rejected)
    params = {"command": "import-blt-arrow", "inputs": [str(f) for f in files],
              "overrides": options.overrides, "target_patch_size": options.target_patch_size}
    write_manifest(out, params, result.shards, len(result.rejected), data_dir=DATA_DIR, patcher=result.patcher,
                   entropy_model=first.get("entropy_model"))
    return result
