"""Shard format v1: round trip, atomicity, manifest, and the validator on damaged files."""
import json
import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bltdata import shards

PATCHER = {"mode": "space", "threshold": None, "threshold_add": None, "max_patch_length": None, "patch_size": 4}


def make_docs(n=50, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        size = int(rng.integers(0, 400)) if i % 7 else 0
        data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        cuts = np.sort(rng.choice(np.arange(1, size), size=min(size - 1, size // 5), replace=False)) if size > 1 else []
        bounds = np.concatenate([[0], cuts, [size]]) if size else np.zeros(1)
        lengths = np.diff(bounds).astype(np.int32)
        entropies = rng.random(size + 1).astype(np.float32) * 4
        docs.append((f"doc-{i}", f"src/{i % 3}.jsonl", data, lengths, entropies))
    return docs


@pytest.fixture
def shard_dir(tmp_path):
    docs = make_docs()
    writer = shards.ShardWriter(tmp_path / "part-00000.parquet", patcher=PATCHER, store_entropies=True,
                                row_group_bytes=2000)
    for doc in docs:
        writer.add(*doc[:4], entropies=doc[4])
    info = writer.close()
    shards.write_rejects(tmp_path, "src", [{"source": "src/x.jsonl", "position": 3, "reason": "bad"}])
    shards.write_manifest(tmp_path, {"mode": "space"}, [info], rejected=1, data_dir="", patcher=PATCHER)
    return tmp_path, docs, info


def test_round_trip_bytes_lengths_entropies(shard_dir):
    directory, docs, info = shard_dir
    rows = list(shards.iter_rows(directory / info.file))
    assert len(rows) == len(docs) == info.rows
    for row, (doc_id, source, data, lengths, entropies) in zip(rows, docs):
        assert row["doc_id"] == doc_id and row["source"] == source
        assert row["bytes"] == data and row["num_bytes"] == len(data)
        assert row["patch_lengths"] == lengths.tolist() and row["num_patches"] == len(lengths)
        np.testing.assert_allclose(row["entropies"], entropies.astype(np.float16), rtol=0, atol=0)
    assert info.bytes == sum(len(d[2]) for d in docs)
    assert info.patches == sum(len(d[3]) for d in docs)
    assert shards.validate(directory) == []


def test_row_groups_follow_the_byte_budget(shard_dir):
    directory, docs, info = shard_dir
    pf = pq.ParquetFile(directory / info.file)
    assert pf.num_row_groups == info.row_groups == len(info.row_group_rows) > 1
    assert sum(info.row_group_rows) == info.rows
    assert sum(info.row_group_bytes) == info.bytes
    # every row group but the last reached the budget; none overshoots by more than one doc
    assert all(b >= 2000 for b in info.row_group_bytes[:-1])


def test_metadata_and_schema(shard_dir):
    directory, _, info = shard_dir
    meta = shards.read_metadata(directory / info.file)
    assert meta["schema_version"] == "1"
    assert meta["patcher"] == PATCHER
    schema = pq.read_schema(directory / info.file)
    assert schema.names == ["doc_id", "source", "bytes", "num_bytes", "patch_lengths", "num_patches", "entropies"]
    assert schema.field("entropies").type.value_type == pa.float16()


def test_readable_by_polars(shard_dir):
    directory, docs, info = shard_dir
    frame = pl.read_parquet(directory / info.file)
    assert frame.height == len(docs)
    assert frame["num_bytes"].sum() == info.bytes
    assert (frame["patch_lengths"].list.sum() == frame["num_bytes"]).all()


def test_manifest_totals_and_fingerprint(shard_dir):
    directory, docs, info = shard_dir
    manifest = shards.read_manifest(directory)
    assert manifest.totals["documents"] == len(docs)
    assert manifest.totals["bytes"] == info.bytes
    assert manifest.totals["rejected"] == 1
    assert manifest.shards[0].sha256 == shards.sha256_file(directory / info.file)
    assert len(manifest.fingerprint) == 64
    doc = json.loads((directory / "manifest.json").read_text())
    assert doc["totals"]["patches"] == info.patches


def test_output_is_deterministic(tmp_path):
    docs = make_docs(seed=3)
    infos = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        with shards.ShardWriter(tmp_path / name / "s.parquet", patcher=PATCHER, store_entropies=True) as w:
            for doc in docs:
                w.add(*doc[:4], entropies=doc[4])
        infos.append(shards.sha256_file(tmp_path / name / "s.parquet"))
    assert infos[0] == infos[1]


def test_no_partial_file_under_the_final_name(tmp_path):
    docs = make_docs(5)
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(tmp_path / "s.parquet", patcher=PATCHER) as w:
            w.add(*docs[1][:4])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_close_leaves_nothing_in_data_or_staging(tmp_path, monkeypatch):
    writer = shards.ShardWriter(tmp_path / "data" / "s.parquet", patcher=PATCHER, staging_dir=tmp_path / "stage")
    writer.add(*make_docs(3)[1][:4])
    assert (tmp_path / "stage" / ".s.parquet.tmp").exists()

    def fail(path, *args, **kwargs):
        raise RuntimeError("digest failed")

    monkeypatch.setattr(shards, "sha256_file", fail)
    with pytest.raises(RuntimeError, match="digest failed"):
        writer.close()
    assert list((tmp_path / "data").iterdir()) == [] and list((tmp_path / "stage").iterdir()) == []


def test_writer_refuses_inconsistent_rows(tmp_path):
    w = shards.ShardWriter(tmp_path / "s.parquet", patcher=PATCHER)
    with pytest.raises(ValueError, match="sum to 3, not its 4 bytes"):
        w.add("d", "s", b"abcd", [1, 2])
    with pytest.raises(ValueError, match="< 1"):
        w.add("d", "s", b"abcd", [4, 0])
    w.abort()


def test_flipped_byte_is_reported(shard_dir):
    directory, _, info = shard_dir
    path = directory / info.file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    problems = shards.validate(directory)
    assert len(problems) >= 1
    assert all(str(path) in str(p) for p in problems)
    assert "sha256" in problems[0].message
    # without the manifest, the page checksums still catch it
    assert len(shards.validate(path)) >= 1


def test_truncated_shard_is_reported(shard_dir):
    directory, _, info = shard_dir
    path = directory / info.file
    path.write_bytes(path.read_bytes()[: info.size // 2])
    problems = shards.validate(directory)
    assert len(problems) == 1 and str(path) in str(problems[0]) and "truncated" in problems[0].message
    file_problems = shards.validate(path)
    assert len(file_problems) == 1 and "not a readable Parquet file" in file_problems[0].message


def test_bad_rows_are_named(tmp_path):
    """A shard written by another tool with broken invariants: each bad row is reported."""
    import pyarrow as pa

    schema = shards.shard_schema(False, shards.shard_metadata(PATCHER, None))
    table = pa.Table.from_pylist([
        {"doc_id": "ok", "source": "s", "bytes": b"abc", "num_bytes": 3, "patch_lengths": [1, 2], "num_patches": 2},
        {"doc_id": "sum", "source": "s", "bytes": b"abc", "num_bytes": 3, "patch_lengths": [1, 1], "num_patches": 2},
        {"doc_id": "zero", "source": "s", "bytes": b"abc", "num_bytes": 3, "patch_lengths": [3, 0], "num_patches": 2},
        {"doc_id": "count", "source": "s", "bytes": b"abc", "num_bytes": 3, "patch_lengths": [3], "num_patches": 2},
        {"doc_id": "nbytes", "source": "s", "bytes": b"abcd", "num_bytes": 3, "patch_lengths": [3], "num_patches": 1},
    ], schema=schema)
    pq.write_table(table, tmp_path / "bad.parquet")
    problems = shards.validate(tmp_path / "bad.parquet")
    assert [p.doc_id for p in problems] == ["sum", "zero", "count", "nbytes"]
    assert [p.row for p in problems] == [1, 2, 3, 4]
    assert "sum to 2" in problems[0].message


def test_missing_metadata_and_wrong_schema(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"doc_id": ["a"], "bytes": [b"x"]}), tmp_path / "foreign.parquet")
    messages = " ".join(p.message for p in shards.validate(tmp_path / "foreign.parquet"))
    assert "schema_version" in messages and "'num_bytes' missing" in messages


def test_directory_checks(shard_dir):
    directory, _, info = shard_dir
    (directory / "stray.parquet").write_bytes(b"x")
    (directory / shards.REJECTED_DIR / "src.jsonl").write_text("")
    messages = [str(p) for p in shards.validate(directory)]
    assert any("stray.parquet" in m and "not in the manifest" in m for m in messages)
    assert any("rejected" in m for m in messages)
    os.remove(directory / info.file)
    assert any("missing" in str(p) for p in shards.validate(directory))


def test_no_manifest(tmp_path):
    problems = shards.validate(tmp_path)
    assert len(problems) == 1 and "manifest.json" in problems[0].file


def test_readable_by_duckdb_and_hf_datasets(shard_dir):
    """Optional readers (not dependencies): skipped where they are not installed."""
    directory, docs, info = shard_dir
    path = str(directory / info.file)
    duckdb = pytest.importorskip("duckdb")
    rows, total, sums = duckdb.sql(
        f"select count(*), sum(num_bytes), sum(list_sum(patch_lengths)) from read_parquet('{path}')").fetchall()[0]
    assert rows == len(docs) and total == info.bytes and sums == info.bytes
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_files=[path], split="train", cache_dir=str(directory / ".hf"))
    assert len(loaded) == len(docs) and loaded[3]["bytes"] == docs[3][2]
