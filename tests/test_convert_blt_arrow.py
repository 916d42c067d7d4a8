"""Export to / import from the reference BLT Arrow layout: alignment, round trip, rejects."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from bltdata.cli.main import main
from bltdata.convert.blt_arrow import from_reference_entropies, to_reference_entropies
from bltdata.inspect.synthetic import write_synthetic_dir
from bltdata.patching import PatcherConfig, patch_lengths
from bltdata.shards import iter_rows, read_manifest, shard_files, validate

THETA = 1.5


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("arrow") / "shards"
    write_synthetic_dir(out, shards=3, docs_per_shard=20, invalid_every=8, patcher=PatcherConfig(threshold=THETA))
    return out


def rows_of(directory):
    return [row for shard in shard_files(directory) for row in iter_rows(shard)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def reference_byte_starts(values, n: int, theta: float) -> list[int]:
    """Patch starts over the bytes, by the reference's rule on its token-aligned values:
    tokens 0 (BOS) and 1 always start a patch; token t >= 2 starts one iff values[t-1] > θ.
    Byte k is token k + 1."""
    token_starts = [0, 1] + [t for t in range(2, n + 1) if np.float32(values[t - 1]) > np.float32(theta)]
    return [t - 1 for t in token_starts if 1 <= t <= n]


def starts_of(lengths) -> list[int]:
    return list(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)) if len(lengths) else []


def test_entropy_mapping_helpers():
    h = np.array([1.0, 2.0, 3.0], np.float16)        # a 2-byte document: H[0..2]
    ref = to_reference_entropies(h)
    assert ref.tolist() == [1.0, 2.0, 3.0, 0.0]       # BOS, b0, b1, EOS
    assert from_reference_entropies(ref, 2).tolist() == h.tolist()
    assert from_reference_entropies(ref[:3], 2).tolist() == h.tolist()
    with pytest.raises(ValueError, match="expected 4"):
        from_reference_entropies(ref[:2], 2)


def test_export_matches_reference_layout_and_alignment(shards_dir, tmp_path):
    out = tmp_path / "exported"
    result = invoke("export", shards_dir, "--format", "blt-arrow", "-o", out, "--name", "demo", "--json")
    assert result.exit_code == 1                                # invalid UTF-8 documents were skipped
    summary = json.loads(result.stdout)
    originals = {r["doc_id"]: r for r in rows_of(shards_dir)}
    skipped = {s["doc_id"] for s in summary["skipped_documents"]}
    assert skipped and all(_not_utf8(originals[i]["bytes"]) for i in skipped)
    assert "skipped (not valid UTF-8)" in result.stderr and sorted(skipped)[0] in result.stderr
    files = sorted(out.glob("*.arrow"))
    assert [f.name for f in files] == [f"demo.chunk.00.jsonl.shard_{i}.arrow" for i in range(3)]
    assert all((out / (f.name + ".complete")).exists() for f in files)
    table = ds.dataset([str(f) for f in files], format="arrow").to_table()   # how the reference reads
    assert table.schema.field("entropies").type == pa.list_(pa.float16())
    assert table.num_rows == len(originals) - len(skipped) == summary["documents"]
    checked = 0
    for row in table.to_pylist():
        original = originals[row["sample_id"]]
        data, values = row["text"].encode("utf-8"), row["entropies"]
        assert data == original["bytes"] and len(values) == len(data) + 2
        assert values[:-1] == original["entropies"] and values[-1] == 0.0
        assert reference_byte_starts(values, len(data), THETA) == starts_of(original["patch_lengths"])
        checked += 1
    assert checked > 20


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_export_import_round_trip(shards_dir, tmp_path):
    assert invoke("export", shards_dir, "-o", tmp_path / "x", "--allow-skipped").exit_code == 0
    result = invoke("import-blt-arrow", tmp_path / "x", "-o", tmp_path / "back", "--json")
    assert result.exit_code == 0, result.output
    assert validate(tmp_path / "back") == []
    originals = [r for r in rows_of(shards_dir) if not _not_utf8(r["bytes"])]
    back = rows_of(tmp_path / "back")
    assert len(back) == len(originals) > 0
    assert back == originals                                   # ids, sources, bytes, boundaries, entropies
    assert [p.name for p in shard_files(tmp_path / "back")] == [p.name for p in shard_files(shards_dir)]
    assert read_manifest(tmp_path / "back").patcher == read_manifest(shards_dir).patcher


def test_reference_columns_only_repatches_identically(shards_dir, tmp_path):
    result = invoke("export", shards_dir, "-o", tmp_path / "x", "--reference-columns-only", "--allow-skipped")
    assert result.exit_code == 0, result.output
    for f in (tmp_path / "x").glob("*.arrow"):
        assert pa.ipc.open_file(f).schema.names == ["sample_id", "text", "entropies"]
    assert invoke("import-blt-arrow", tmp_path / "x", "-o", tmp_path / "back").exit_code == 0
    originals = [r for r in rows_of(shards_dir) if not _not_utf8(r["bytes"])]
    back = rows_of(tmp_path / "back")
    assert len(back) == len(originals) > 0
    for a, b in zip(originals, back):
        assert (a["doc_id"], a["bytes"], a["patch_lengths"], a["entropies"]) == (
            b["doc_id"], b["bytes"], b["patch_lengths"], b["entropies"])
    assert back[0]["source"].endswith(".arrow")


def _reference_file(path, rows, stream: bool):
    schema = pa.schema([pa.field("sample_id", pa.string(), nullable=False), pa.field("text", pa.string()),
                        pa.field("entropies", pa.list_(pa.float16()))])
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(path), "wb") as sink, opener(sink, schema) as writer:
        writer.write_batch(batch)


def test_import_reference_stream_file_with_bad_rows(tmp_path):
    rng = np.random.default_rng(0)
    good = [("a", "hello world, entropy patching"), ("b", "naïve 日本語 text")]
    rows = [{"sample_id": i, "text": t, "entropies": rng.uniform(0, 3, len(t.encode()) + 2).astype(np.float16)}
            for i, t in good]
    rows.append({"sample_id": "no-eos", "text": "abc", "entropies": np.array([2, 1, 0.5, 2], np.float16)})
    rows.append({"sample_id": "short", "text": "abcdef", "entropies": np.array([1, 2], np.float16)})
    rows.append({"sample_id": "null", "text": None, "entropies": np.array([1.0], np.float16)})
    _reference_file(tmp_path / "ref.arrow", rows, stream=True)
    result = invoke("import-blt-arrow", tmp_path / "ref.arrow", "-o", tmp_path / "out", "--threshold", "1.0")
    assert result.exit_code == 1 and "rejected 2 documents: short, null" in result.stderr
    assert validate(tmp_path / "out") == []
    assert len((tmp_path / "out" / "rejected" / "import.jsonl").read_text().splitlines()) == 2
    imported = rows_of(tmp_path / "out")
    assert [r["doc_id"] for r in imported] == ["a", "b", "no-eos"]
    for row, source in zip(imported, rows):
        data = source["text"].encode()
        h = np.asarray(source["entropies"][:len(data) + 1], np.float16)
        assert row["bytes"] == data and row["entropies"] == h.tolist()
        assert row["patch_lengths"] == patch_lengths(PatcherConfig(threshold=1.0), data, h).tolist()
        assert row["source"] == "ref.arrow"


def test_import_target_patch_size_and_file_format(tmp_path):
    rng = np.random.default_rng(1)
    rows = [{"sample_id": f"d{i}", "text": "x" * 200, "entropies": rng.uniform(0, 3, 202).astype(np.float16)}
            for i in range(5)]
    _reference_file(tmp_path / "ref.arrow", rows, stream=False)
    result = invoke("import-blt-arrow", tmp_path / "ref.arrow", "-o", tmp_path / "out",
                    "--target-patch-size", "4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["documents"] == 5 and 1000 / summary["patches"] == pytest.approx(4, rel=0.05)


def test_export_needs_entropies_and_fresh_output(tmp_path, shards_dir):
    write_synthetic_dir(tmp_path / "plain", shards=1, docs_per_shard=3, store_entropies=False)
    result = invoke("export", tmp_path / "plain", "-o", tmp_path / "x")
    assert result.exit_code == 1 and "shard-00000.parquet" in result.output and "entropies" in result.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    result = invoke("export", shards_dir, "-o", tmp_path / "busy")
    assert result.exit_code == 2 and "busy" in result.output


def test_export_failure_leaves_no_arrow_file(shards_dir, tmp_path, fail_on_call, all_files):
    from bltdata.convert import blt_arrow

    calls = fail_on_call(blt_arrow, "_export_batch", 2, RuntimeError("killed mid-file"))
    with pytest.raises(RuntimeError, match="killed mid-file"):
        blt_arrow.export_blt_arrow(shards_dir, tmp_path / "out")
    # the first shard's file was finished; the second (one row group per shard) left nothing
    first = "bltdata.chunk.00.jsonl.shard_0.arrow"
    assert len(calls) == 2 and all_files(tmp_path / "out") == [first, first + ".complete"]


def test_import_failure_leaves_no_shard(shards_dir, tmp_path, fail_on_call, all_files):
    from bltdata.convert import blt_arrow

    blt_arrow.export_blt_arrow(shards_dir, tmp_path / "ref")
    files = sorted((tmp_path / "ref").glob("*.arrow"))
    calls = fail_on_call(blt_arrow, "_add_imported", 3, RuntimeError("killed mid-shard"))
    with pytest.raises(RuntimeError, match="killed mid-shard"):
        blt_arrow.import_blt_arrow(files, tmp_path / "out")
    assert len(calls) == 3 and all_files(tmp_path / "out") == []
