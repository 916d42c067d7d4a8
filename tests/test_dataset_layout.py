"""The shard directory layout: `OUT/data/` holds only the shards, so every Parquet reader opens it.

Each test runs the real pipeline (space mode: no model) on a small corpus written here. The
old layout (shards beside manifest.json, written before `data/` existed) stays readable,
verifiable and resumable in its own layout.
"""
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bltdata import jobs, patch_job, shards
from bltdata.cli.main import main
from bltdata.data.source import ManifestSource
from bltdata.pipelines import patch as pipeline

SHARD_BYTES = 600


def make_corpus(root: Path) -> None:
    """12 text files of ~100-300 bytes in two folders, and a jsonl with one bad line (-> rejected/)."""
    for i in range(12):
        path = root / ("alpha" if i % 2 else "beta") / f"doc{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"document {i} says " + "hello byte world " * (5 + i))
    (root / "lines.jsonl").write_text('{"text": "one good line"}\nnot json\n{"text": "another good line"}\n')


def run(root, out, **kw):
    job = patch_job.PatchJob(inputs=[str(root)], output=str(out), mode="space", shard_bytes=SHARD_BYTES, **kw)
    _, prepared = pipeline.run_job(job)
    return prepared


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def shard_digests(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    make_corpus(root / "in")
    run(root / "in", root / "out")
    manifest = shards.read_manifest(root / "out")
    doc_ids = sorted(r["doc_id"] for p in shards.shard_files(root / "out") for r in shards.iter_rows(p, ["doc_id"]))
    assert manifest.totals["documents"] == len(doc_ids) == 14 and manifest.totals["shards"] >= 3
    return root / "out", manifest, doc_ids


def test_the_data_directory_holds_only_the_shards(patched):
    out, manifest, _ = patched
    assert manifest.data_dir == shards.DATA_DIR and manifest.shard_dir == out / "data"
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(s.file for s in manifest.shards)
    assert {p.name for p in out.iterdir()} == {"data", "manifest.json", "rejected", ".bltdata"}
    assert json.loads((out / "manifest.json").read_text())["data_dir"] == "data"
    assert not list((out / ".bltdata" / "staging").iterdir())  # no temporaries left anywhere
    assert shards.validate(out) == []


def test_polars_pyarrow_and_duckdb_open_the_data_directory(patched):
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    import pyarrow.dataset as pads

    out, manifest, doc_ids = patched
    data = str(out / "data")
    total = manifest.totals["documents"]
    assert sorted(pl.read_parquet(data)["doc_id"].to_list()) == doc_ids
    assert sorted(pq.read_table(data).column("doc_id").to_pylist()) == doc_ids
    assert pads.dataset(data, format="parquet").count_rows() == total
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/*.parquet')").fetchall() == [(total,)]
    summed = duckdb.sql(f"SELECT sum(num_bytes), sum(num_patches) FROM '{data}/*.parquet'").fetchall()
    assert summed == [(manifest.totals["bytes"], manifest.totals["patches"])]


def test_duckdb_opens_the_bare_data_directory(patched):
    duckdb = pytest.importorskip("duckdb")
    out, manifest, _ = patched
    try:
        found = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out / 'data'}')").fetchall()
    except duckdb.Error as e:  # older duckdb wants a glob; the glob form is tested above
        pytest.skip(f"duckdb {duckdb.__version__} does not read a directory: {e}")
    assert found == [(manifest.totals["documents"],)]


def test_hf_datasets_loads_the_data_directory(patched, tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    out, manifest, doc_ids = patched
    cache = str(tmp_path / "hf" / "datasets")
    by_files = datasets.load_dataset("parquet", data_files=f"{out / 'data'}/*.parquet", split="train", cache_dir=cache)
    assert sorted(by_files["doc_id"]) == doc_ids
    by_dir = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train", cache_dir=cache)
    assert len(by_dir) == manifest.totals["documents"] and sorted(by_dir["doc_id"]) == doc_ids


def test_commands_take_the_data_directory_as_well_as_the_job_directory(patched, tmp_path):
    out, manifest, _ = patched
    for path in (out, out / "data", out / "manifest.json"):
        assert shards.manifest_path(path) == out / "manifest.json"
        assert shards.validate(path) == []
        assert shards.summarize(path)["documents"] == manifest.totals["documents"]
    for path in (out, out / "data"):
        verified = invoke("verify", path)
        assert verified.exit_code == 0 and "ok: " in verified.output, verified.output
        shown = invoke("show", path, "--row", 2)
        assert shown.exit_code == 0 and str(out / "data") in shown.output, shown.output
    source = ManifestSource(out / "data", seed=0, shuffle=False, shuffle_window=1)
    rows = sum(len(source.read_row_group(i)[0]) for i in range(source.num_row_groups))
    assert source.path == str(out / "manifest.json") and rows == manifest.totals["documents"]
    repatched = invoke("repatch", out / "data", "-o", tmp_path / "re", "--mode", "static", "--patch-size", "3")
    assert repatched.exit_code == 0, repatched.output
    again = shards.read_manifest(tmp_path / "re")
    assert again.data_dir == "data" and again.rejected == manifest.rejected == 1  # rejected/ found one level up
    assert shards.validate(tmp_path / "re") == []


def test_train_takes_the_data_directory(patched, tmp_path):
    out, _, _ = patched
    result = invoke("train", "--data", out / "data", "--eval-data", out / "data", "-o", tmp_path / "run",
                    "--preset", "debug", "--steps", 2, "--seq-len", 33, "--batch-size", 2, "--eval-batches", 1,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_killed_run_leaves_only_shards_in_data(tmp_path, monkeypatch):
    """A worker dies with a shard half written (just before its rename, no abort running, as when
    the process is killed): the temporary file stays in .bltdata/staging, never in data/."""
    make_corpus(tmp_path / "in")
    real_close = shards.ShardWriter.close

    def dying_close(self):
        if "doc07" in self.path:
            raise OSError(f"killed while writing {self.path}")
        return real_close(self)

    monkeypatch.setattr(shards.ShardWriter, "close", dying_close)
    monkeypatch.setattr(shards.ShardWriter, "abort", lambda self: None)
    with pytest.raises(Exception, match="killed while writing"):
        run(tmp_path / "in", tmp_path / "k")
    monkeypatch.undo()
    data = tmp_path / "k" / "data"
    left = sorted(data.iterdir())
    assert left and all(p.is_file() and p.suffix == ".parquet" and not p.name.startswith(".") for p in left)
    staged = [p.name for p in (tmp_path / "k" / ".bltdata" / "staging").iterdir()]
    assert len(staged) == 1 and "doc07" in staged[0] and staged[0].endswith(".parquet.tmp")  # the half-written one
    import polars as pl

    assert pl.read_parquet(str(data)).height > 0  # what is there opens as a dataset, even mid-job
    prepared = run(tmp_path / "in", tmp_path / "k")
    assert 1 <= len(prepared.pending_packs) < len(prepared.packs)
    run(tmp_path / "in", tmp_path / "ref")
    assert shard_digests(data) == shard_digests(tmp_path / "ref" / "data")
    assert not list((tmp_path / "k" / ".bltdata" / "staging").iterdir()) and shards.validate(tmp_path / "k") == []


def to_old_layout(out: Path) -> None:
    """Make `out` what the code before `data/` wrote: shards beside the manifest, job.json without data_dir."""
    for shard in (out / "data").glob("*.parquet"):
        shard.rename(out / shard.name)
    shutil.rmtree(out / "data")
    job_file = out / jobs.STATE_DIR / jobs.JOB_FILE
    params = json.loads(job_file.read_text())
    del params["data_dir"]
    job_file.write_text(json.dumps(params, sort_keys=True, indent=1))
    manifest_file = out / shards.MANIFEST_NAME
    if manifest_file.exists():  # format 1: no data_dir, shards beside it
        doc = json.loads(manifest_file.read_text())
        del doc["data_dir"]
        doc["format_version"] = 1
        doc["params"].pop("data_dir")
        manifest_file.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def test_an_unfinished_old_layout_job_resumes_in_its_layout(tmp_path, reading_fails):
    make_corpus(tmp_path / "in")
    with reading_fails("beta/doc10.txt"), pytest.raises(Exception, match="injected failure"):
        run(tmp_path / "in", tmp_path / "old")
    to_old_layout(tmp_path / "old")
    assert jobs.written_before_data_dir(tmp_path / "old")
    prepared = run(tmp_path / "in", tmp_path / "old")
    assert 1 <= len(prepared.pending_packs) < len(prepared.packs) and "data_dir" not in prepared.params
    old = tmp_path / "old"
    assert not (old / "data").exists()
    manifest = shards.read_manifest(old)
    assert manifest.data_dir == "" and manifest.shard_dir == old
    run(tmp_path / "in", tmp_path / "new")
    assert shard_digests(old) == shard_digests(tmp_path / "new" / "data") and len(shard_digests(old)) >= 3
    assert shards.validate(old) == [] and invoke("verify", old).exit_code == 0


def test_an_old_layout_directory_is_read_and_verified(tmp_path):
    make_corpus(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "old")
    expected = shards.read_manifest(tmp_path / "old")
    to_old_layout(tmp_path / "old")
    old = tmp_path / "old"
    assert json.loads((old / "manifest.json").read_text())["format_version"] == 1
    manifest = shards.read_manifest(old)
    assert manifest.data_dir == "" and manifest.fingerprint == expected.fingerprint
    assert all(p.parent == old for p in shards.shard_files(old)) and shards.validate(old) == []
    assert invoke("verify", old).exit_code == 0
    source = ManifestSource(old, seed=0, shuffle=False, shuffle_window=1)
    assert sum(len(source.read_row_group(i)[0]) for i in range(source.num_row_groups)) == 14
    run(tmp_path / "in", old)  # a finished old-layout job re-run: nothing to do, nothing moves
    assert not (old / "data").exists() and shards.read_manifest(old).fingerprint == expected.fingerprint


def test_verify_names_a_stray_file_in_data(patched, tmp_path):
    out, _, _ = patched
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data" / "notes.txt").write_text("kept here by hand")
    (copy / "data" / ".half.parquet.tmp").write_bytes(b"PAR1")
    problems = [str(p) for p in shards.validate(copy)]
    assert len(problems) == 2 and all("not a shard" in p for p in problems), problems
    assert any("notes.txt" in p for p in problems) and any(".half.parquet.tmp" in p for p in problems)


def test_a_manifest_data_dir_outside_the_job_directory_is_refused(patched, tmp_path):
    out, _, _ = patched
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["data_dir"] = "../elsewhere"
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not a plain directory name"):
        shards.read_manifest(copy)


def test_hf_data_files_keeps_shards_whose_names_look_like_splits(tmp_path, monkeypatch):
    """Shard names come from input names; `data_files=` (what the docs and the summary give)
    loads every shard, where `data_dir=` would guess a "test" split from `test_b.txt`'s shard."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    (tmp_path / "in").mkdir()
    for name in ("a.txt", "test_b.txt", "eval.txt"):
        (tmp_path / "in" / name).write_text(f"the text of {name} " * 40)
    run(tmp_path / "in", tmp_path / "out")
    manifest = shards.read_manifest(tmp_path / "out")
    assert manifest.totals["shards"] == 3 and any(s.file.startswith("test_b") for s in manifest.shards)
    loaded = datasets.load_dataset("parquet", data_files=f"{tmp_path / 'out' / 'data'}/*.parquet", split="train",
                                   cache_dir=str(tmp_path / "hf" / "datasets"))
    assert sorted(loaded["source"]) == ["a.txt", "eval.txt", "test_b.txt"]


def test_the_patch_summary_names_the_dataset_directory_and_how_to_open_it(tmp_path):
    make_corpus(tmp_path / "in")
    result = invoke("patch", tmp_path / "in", "-o", tmp_path / "out", "--mode", "space", "--no-progress")
    assert result.exit_code == 0, result.output
    data = tmp_path / "out" / "data"
    assert f"parquet dataset   {data} " in result.output
    for opener in (f'pl.read_parquet("{data}")', f'pq.read_table("{data}")', f"FROM '{data}/*.parquet'",
                   f'data_files="{data}/*.parquet"'):
        assert opener in result.output, opener
