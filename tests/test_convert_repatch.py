"""`bltdata repatch`: new boundaries from stored entropies, same format and guarantees."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bltdata.cli.main import main
from bltdata.inspect.synthetic import write_synthetic_dir
from bltdata.patching import PatcherConfig, patch_lengths
from bltdata.shards import iter_rows, read_manifest, read_metadata, shard_files, validate, write_rejects


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repatch") / "shards"
    write_synthetic_dir(out, shards=3, docs_per_shard=15, invalid_every=6)
    return out


def rows_of(directory):
    return [row for shard in shard_files(directory) for row in iter_rows(shard)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_repatch_threshold_rewrites_boundaries_only(shards_dir, tmp_path):
    result = invoke("repatch", shards_dir, "-o", tmp_path / "t2", "--threshold", "2.0", "--max-patch-length", "6")
    assert result.exit_code == 0, result.output
    assert validate(tmp_path / "t2") == []
    assert [p.name for p in shard_files(tmp_path / "t2")] == [p.name for p in shard_files(shards_dir)]
    config = PatcherConfig(threshold=2.0, max_patch_length=6)
    before, after = rows_of(shards_dir), rows_of(tmp_path / "t2")
    assert len(after) == len(before) > 0
    for a, b in zip(before, after):
        assert (a["doc_id"], a["source"], a["bytes"], a["entropies"]) == (b["doc_id"], b["source"], b["bytes"],
                                                                         b["entropies"])
        expected = patch_lengths(config, a["bytes"], np.asarray(a["entropies"], np.float32))
        assert b["patch_lengths"] == expected.tolist()
    assert read_manifest(tmp_path / "t2").patcher == config.to_dict()
    assert read_metadata(shard_files(tmp_path / "t2")[0])["patcher"] == config.to_dict()
    assert read_manifest(tmp_path / "t2").entropy_model == read_manifest(shards_dir).entropy_model


def test_repatch_prints_the_patcher_as_json(shards_dir, tmp_path):
    result = invoke("repatch", shards_dir, "-o", tmp_path / "t3", "--threshold", "2.0")
    assert result.exit_code == 0, result.output
    first, rest = result.output.split("\n", 1)
    assert first.startswith("wrote ") and "{" not in first
    assert rest.startswith("patcher {")
    printed = json.loads(rest.removeprefix("patcher "))  # JSON, not a Python dict's repr
    assert printed == PatcherConfig(threshold=2.0).to_dict() and "None" not in rest


def test_repatch_is_deterministic_and_carries_rejects(tmp_path):
    src = tmp_path / "src"
    infos = write_synthetic_dir(src, shards=2, docs_per_shard=10)
    write_rejects(src, "part", [{"source": "a.jsonl", "position": 3, "reason": "malformed JSON"}])
    from bltdata.shards import write_manifest
    write_manifest(src, {"synthetic": True}, infos, 1, data_dir="data")
    assert validate(src) == []
    for name in ("a", "b"):
        assert invoke("repatch", src, "-o", tmp_path / name, "--mode", "space").exit_code == 0
    files_a = sorted(p.name for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.name for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert "part.jsonl" in files_a and validate(tmp_path / "a") == []
    for name in files_a:
        path_a = next((tmp_path / "a").rglob(name))
        assert path_a.read_bytes() == next((tmp_path / "b").rglob(name)).read_bytes()


def test_repatch_target_patch_size(shards_dir, tmp_path):
    result = invoke("repatch", shards_dir, "-o", tmp_path / "p4", "--target-patch-size", "4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["bytes"] / summary["patches"] == pytest.approx(4.0, rel=0.05)
    assert summary["patcher"]["threshold"] == read_manifest(tmp_path / "p4").patcher["threshold"]


def test_repatch_errors(shards_dir, tmp_path):
    write_synthetic_dir(tmp_path / "plain", shards=1, docs_per_shard=3, store_entropies=False)
    result = invoke("repatch", tmp_path / "plain", "-o", tmp_path / "o1", "--threshold", "1")
    assert result.exit_code == 1 and "shard-00000.parquet" in result.output and "entropies" in result.output
    assert not (tmp_path / "o1").exists()
    assert invoke("repatch", tmp_path / "plain", "-o", tmp_path / "o2", "--mode", "static",
                  "--patch-size", "3").exit_code == 0
    assert all(max(r["patch_lengths"], default=3) <= 3 for r in rows_of(tmp_path / "o2"))
    result = invoke("repatch", shards_dir, "-o", tmp_path / "o3")
    assert result.exit_code == 2 and "--threshold" in result.output
    result = invoke("repatch", shards_dir, "-o", tmp_path / "o4", "--threshold", "1", "--target-patch-size", "3")
    assert result.exit_code == 2
    result = invoke("repatch", shards_dir, "-o", shards_dir, "--threshold", "1")
    assert result.exit_code in (1, 2) and str(shards_dir) in result.output


def test_repatch_failure_leaves_no_shard_and_bugs_propagate(shards_dir, tmp_path, monkeypatch, all_files):
    from bltdata.convert import repatch

    calls = []

    def broken_add_rows(writer, *args):
        calls.append(1)
        writer.add("d", "s", b"ab", [2], np.zeros(3))
        raise TypeError("a bug, not bad data")

    monkeypatch.setattr(repatch, "_add_rows", broken_add_rows)
    with pytest.raises(TypeError, match="a bug"):
        repatch.repatch_directory(shards_dir, tmp_path / "out", PatcherConfig(threshold=1.0))
    assert calls == [1]
    assert all_files(tmp_path / "out") == []  # no shard, no temporary, no manifest


def test_repatch_bad_data_is_one_line_naming_the_shard(shards_dir, tmp_path, monkeypatch, all_files):
    from bltdata.convert import repatch

    def bad(config, table):
        raise ValueError("entropies are not n + 1 values per document")

    monkeypatch.setattr(repatch, "patch_table", bad)
    result = invoke("repatch", shards_dir, "-o", tmp_path / "out", "--threshold", "1")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "shard-00000.parquet: entropies are not n + 1" in lines[0]
    assert "Traceback" not in result.output and all_files(tmp_path / "out") == []
