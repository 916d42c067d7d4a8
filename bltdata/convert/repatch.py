"""New patch boundaries for an existing shard directory, from its stored entropies.

`bltdata repatch` changes the patcher (threshold, mode, maximum length) without running the
entropy model again. Every input shard becomes an output shard of the same name, written
with `ShardWriter` (atomic, deterministic) and followed by a new manifest; documents, ids,
sources, order and stored entropies are carried over unchanged, and so are the records in
`rejected/`. Modes `entropy` and `monotonic` read the stored H[0..n-1] (the shards must
have been written with `--store-entropies`); `space`, `static` and `byte` need only bytes.

`--target-patch-size S` picks θ with `calibrate_threshold` on a sample: the first
`sample_bytes` of documents in manifest order, so the choice is deterministic.

The patch rules themselves live in `bltdata.patching`; this module only feeds it row
groups as flat arrays.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bltdata.arrow import binary_flat, drop_last_per_row, list_flat
from bltdata.patching import PatcherConfig, calibrate_threshold, patch_batch
from bltdata.shards import (DATA_DIR, REJECTED_DIR, ShardInfo, ShardWriter, data_path,
                            manifest_path, open_shard, read_manifest, read_metadata, staging_path, write_manifest,
                            write_rejects)

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_BYTES = 16 << 20
# What a malformed input shard raises while it is read and re-patched (ArrowInvalid is a
# ValueError; a missing column is a KeyError). A plain OSError propagates as itself: it names its file.
DATA_ERRORS = (ValueError, KeyError, pa.ArrowException)


@dataclass
class RepatchResult:
    out_dir: Path
    patcher: dict
    shards: list[ShardInfo] = field(default_factory=list)
    rejected: int = 0

    def to_dict(self) -> dict:
        return {"out": str(self.out_dir), "patcher": self.patcher, "shards": len(self.shards),
                "documents": sum(s.rows for s in self.shards), "bytes": sum(s.bytes for s in self.shards),
                "patches": sum(s.patches for s in self.shards), "rejected": self.rejected}


def prepare_output_dir(out_dir: str | os.PathLike, inputs: list[Path] = ()) -> Path:
    """Create `out_dir`; refuse one that holds files, or one that is among the inputs."""
    out = Path(out_dir)
    resolved = out.resolve()
    for p in inputs:
        p = Path(p).resolve()
        if resolved == p or resolved == p.parent and p.is_file():
            raise ValueError(f"{out}: the output directory must differ from the input {p}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: output exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def has_entropies(shard: Path) -> bool:
    return "entropies" in pq.read_schema(shard).names


def require_entropies(shards: list[Path], config: PatcherConfig) -> None:
    """ValueError naming the first shard without stored entropies, if the mode needs them."""
    if not config.needs_entropies:
        return
    for shard in shards:
        if not has_entropies(shard):
            raise ValueError(f"{shard}: no stored entropies, but patching mode {config.mode!r} needs them "
                             f"(write the shards with --store-entropies, or use mode space/static/byte)")


def iter_row_groups(shards: list[Path], columns: list[str]) -> Iterator[tuple[Path, object]]:
    for shard in shards:
        pf = open_shard(shard)
        for i in range(pf.num_row_groups):
            yield shard, pf.read_row_group(i, columns=columns)


def sample_entropies(shards: list[Path], sample_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat H[0..n-1] and byte offsets of the first documents holding ~`sample_bytes` bytes."""
    chunks, lengths, total = [], [], 0
    for _, table in iter_row_groups(shards, ["entropies"]):
        values, offsets = drop_last_per_row(*list_flat(table.column("entropies")))
        chunks.append(values.astype(np.float32))
        lengths.append(np.diff(offsets))
        total += len(values)
        if total >= sample_bytes:
            break
    return _concat_sample(chunks, lengths)


def _concat_sample(chunks, lengths) -> tuple[np.ndarray, np.ndarray]:
    if not chunks:
        return np.zeros(0, np.float32), np.zeros(1, np.int64)
    doc_lengths = np.concatenate(lengths)
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    return np.concatenate(chunks), offsets


def calibrated(config: PatcherConfig, target_patch_size: float, entropies: np.ndarray,
               offsets: np.ndarray) -> PatcherConfig:
    """`config` with θ chosen so the sample's mean patch length is ≈ `target_patch_size`."""
    if not config.needs_entropies:
        raise ValueError(f"--target-patch-size needs mode entropy or monotonic, not {config.mode!r}")
    theta = calibrate_threshold(entropies, offsets, target_patch_size, config)
    log.info("calibrated threshold %.9g for a mean patch of %s bytes", theta, target_patch_size)
    return dataclasses.replace(config, threshold=theta)


def patch_table(config: PatcherConfig, table) -> tuple[np.ndarray, np.ndarray]:
    """(flat patch lengths, patch offsets) for every row of a row group."""
    data, offsets = binary_flat(table.column("bytes"))
    entropies = None
    if config.needs_entropies:
        entropies, ent_offsets = drop_last_per_row(*list_flat(table.column("entropies")))
        if not np.array_equal(ent_offsets, offsets):
            raise ValueError("entropies are not n + 1 values per document")
    return patch_batch(config, offsets, entropies=entropies, data=data)


def copy_rejects(src_dir: Path, out_dir: Path) -> int:
    """Carry `rejected/*.jsonl` over (same names, same records); returns the count."""
    total = 0
    for f in sorted((src_dir / REJECTED_DIR).glob("*.jsonl")):
        records = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        total += write_rejects(out_dir, f.stem, records)
    return total


def _rewrite_shard(src: Path, out_dir: Path, config: PatcherConfig, keep_entropies: bool) -> ShardInfo:
    meta = read_metadata(src)
    store = keep_entropies and has_entropies(src)
    columns = ["doc_id", "source", "bytes"] + (["entropies"] if store or config.needs_entropies else [])
    try:
        with ShardWriter(Path(data_path(out_dir), src.name), patcher=config.to_dict(),
                         entropy_model=meta.get("entropy_model"), store_entropies=store,
                         staging_dir=staging_path(out_dir)) as writer:
            for _, table in iter_row_groups([src], columns):
                _add_rows(writer, table, *patch_table(config, table), store)
    except DATA_ERRORS as e:  # bad input, named with its shard; anything else is a bug and propagates
        raise ValueError(f"{src}: {e}") from e
    return writer.info


def _add_rows(writer: ShardWriter, table, lengths: np.ndarray, patch_offsets: np.ndarray, store: bool) -> None:
    ids = table.column("doc_id").to_pylist()
    sources = table.column("source").to_pylist()
    docs = table.column("bytes").to_pylist()
    if store:
        values, ent_offsets = list_flat(table.column("entropies"))
    for i, (doc_id, source, data) in enumerate(zip(ids, sources, docs)):
        entropies = values[ent_offsets[i]:ent_offsets[i + 1]] if store else None
        writer.add(doc_id, source, data, lengths[patch_offsets[i]:patch_offsets[i + 1]], entropies)


def repatch_directory(src_dir, out_dir, config: PatcherConfig, *, target_patch_size: float | None = None,
                      sample_bytes: int = DEFAULT_SAMPLE_BYTES, keep_entropies: bool = True) -> RepatchResult:
    """Write `out_dir`: the shards of `src_dir` with boundaries from `config` (see module doc)."""
    src = Path(src_dir)
    if not manifest_path(src).exists():
        raise FileNotFoundError(f"{manifest_path(src)}: no manifest (repatch takes a complete shard directory)")
    manifest = read_manifest(src)
    shards = [manifest.shard_path(s) for s in manifest.shards]
    require_entropies(shards, config)
    if target_patch_size is not None:
        config = calibrated(config, target_patch_size, *sample_entropies(shards, sample_bytes))
    out = prepare_output_dir(out_dir, [src])
    result = RepatchResult(out_dir=out, patcher=config.to_dict())
    for shard in shards:
        result.shards.append(_rewrite_shard(shard, out, config, keep_entropies))
        log.info("repatched %s", shard.name)
    result.rejected = copy_rejects(manifest.directory, out)
    params = {"command": "repatch", "input": str(src), "input_fingerprint": manifest.fingerprint,
              "target_patch_size": target_patch_size, "sample_bytes": sample_bytes if target_patch_size else None,
              "input_params": manifest.params}
    write_manifest(out, params, result.shards, result.rejected, data_dir=DATA_DIR, patcher=config.to_dict(),
                   entropy_model=manifest.entropy_model)
    return result
