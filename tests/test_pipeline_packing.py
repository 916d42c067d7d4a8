"""Small input files are packed into shared shards (jobs.Pack), with exact resume per pack."""
import hashlib
import json
import math
import os
import time
from pathlib import Path

import pytest

from bltdata import jobs, readers, shards
from bltdata.patch_job import PatchJob
from bltdata.pipelines import patch as pipeline

SHARD_BYTES = 4096


def make_tiny_files(root: Path, n: int) -> int:
    """n tiny .txt files in two directories (plus one jsonl with a bad line); returns total bytes."""
    total = 0
    for i in range(n):
        path = root / ("a" if i % 2 else "b") / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (f"file {i} says " + "hello world " * (i % 7)).encode()
        path.write_bytes(data)
        total += len(data)
    bad = b'{"text": "good one"}\nnot json\n'
    (root / "a" / "mixed.jsonl").write_bytes(bad)
    return total + len(bad)


def run(root, out, workers=1, **kw):
    job = PatchJob(inputs=[str(root)], output=str(out), mode="space", shard_bytes=SHARD_BYTES, **kw)
    result, prepared = pipeline.run_job(job, workers=workers)
    return pipeline.metric_totals(result), prepared


def digests(out):
    out = Path(out)
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".bltdata" not in p.parts)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def kill_and_rerun(root, tmp_path, reading_fails, victim: str):
    with reading_fails(victim), pytest.raises(Exception, match="injected failure"):
        run(root, tmp_path / "k")
    assert not (tmp_path / "k" / "manifest.json").exists()
    _, prepared = run(root, tmp_path / "k")
    assert 1 <= len(prepared.pending_packs) <= len(prepared.packs)
    return prepared


def check_packed_output(root, out, total_bytes, n_files):
    manifest = shards.read_manifest(out)
    assert len(manifest.shards) <= math.ceil(total_bytes / SHARD_BYTES) + 3
    sources = [row["source"] for path in shards.shard_files(out) for row in shards.iter_rows(path, ["source"])]
    assert len(sources) == n_files + 1 and len(set(sources)) == n_files + 1  # each row names its own file
    rejects = [json.loads(line) for f in (Path(out) / shards.REJECTED_DIR).glob("*.jsonl")
               for line in f.read_text().splitlines()]
    assert [(r["source"], r["position"]) for r in rejects] == [("a/mixed.jsonl", 2)]


def test_small_files_share_shards_and_a_killed_run_completes_identically(tmp_path, reading_fails):
    root = tmp_path / "in"
    total = make_tiny_files(root, 500)
    run(root, tmp_path / "ref")
    check_packed_output(root, tmp_path / "ref", total, 500)
    prepared = kill_and_rerun(root, tmp_path, reading_fails, victim="b/f00250.txt")
    assert len(prepared.pending_packs) < len(prepared.packs)  # the packs done before the kill were skipped
    assert digests(tmp_path / "k") == digests(tmp_path / "ref")


@pytest.mark.slow
def test_ten_thousand_tiny_files(tmp_path, reading_fails):
    root = tmp_path / "in"
    total = make_tiny_files(root, 10_000)
    started = time.perf_counter()
    run(root, tmp_path / "ref")
    print(f"10,000 files, space mode: {time.perf_counter() - started:.1f} s")
    check_packed_output(root, tmp_path / "ref", total, 10_000)
    kill_and_rerun(root, tmp_path, reading_fails, victim="a/f05001.txt")
    assert digests(tmp_path / "k") == digests(tmp_path / "ref")


def test_packed_shards_are_identical_across_workers_and_batch_budgets(tmp_path):
    root = tmp_path / "in"
    make_tiny_files(root, 200)
    run(root, tmp_path / "one")
    run(root, tmp_path / "two", workers=2, batch_bytes=64)
    assert len(shards.read_manifest(tmp_path / "one").shards) >= 2
    assert digests(tmp_path / "two") == digests(tmp_path / "one")


def test_an_added_input_is_refused(tmp_path):
    root = tmp_path / "in"
    make_tiny_files(root, 20)
    run(root, tmp_path / "out")
    (root / "a" / "f99999.txt").write_bytes(b"new")
    with pytest.raises(jobs.JobMismatch, match="sources"):
        run(root, tmp_path / "out")


def test_a_changed_input_inside_a_pack_is_named(tmp_path):
    root = tmp_path / "in"
    make_tiny_files(root, 20)
    run(root, tmp_path / "out")
    changed = root / "a" / "f00003.txt"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    with pytest.raises(jobs.StaleInputs, match="a/f00003.txt"):
        run(root, tmp_path / "out")


def test_plan_packs_groups_small_files_and_keeps_large_ones_alone():
    files = [readers.InputFile(f"/x/{s}", s, "txt") for s in ["a", "b", "c", "d", "e"]]
    packs = jobs.plan_packs(files, [10, 10, 100, 5, 5], shard_bytes=30)
    assert [p.sources for p in packs] == [["a", "b"], ["c"], ["d", "e"]]
    assert packs[1].key == jobs.file_key("c")  # a file alone keeps its own shard names
    assert packs[0].key != packs[2].key
    assert jobs.plan_packs(files, [10, 10, 100, 5, 5], shard_bytes=30) == packs


def test_a_directory_written_before_packing_resumes_one_file_per_shard(tmp_path, monkeypatch, reading_fails):
    """An output directory from before packing (job.json without `packing`) is finished as it was begun."""
    make_tiny_files(tmp_path / "in", 40)
    monkeypatch.setattr(pipeline.jobs, "plan_packs", lambda files, sizes, shard_bytes: jobs.one_pack_per_file(files))
    with reading_fails("b/f00020.txt"), pytest.raises(Exception, match="injected failure"):
        run(tmp_path / "in", tmp_path / "old")
    job_file = tmp_path / "old" / ".bltdata" / jobs.JOB_FILE
    params = json.loads(job_file.read_text())
    del params["packing"], params["data_dir"]  # what the old code wrote: no packing, shards beside the manifest
    job_file.write_text(json.dumps(params, sort_keys=True, indent=1))
    for shard in (tmp_path / "old" / shards.DATA_DIR).glob("*.parquet"):
        shard.rename(tmp_path / "old" / shard.name)
    monkeypatch.undo()

    _, prepared = run(tmp_path / "in", tmp_path / "old")
    assert all(len(p.files) == 1 for p in prepared.packs) and len(prepared.packs) == 41
    assert 1 <= len(prepared.pending_packs) < 41
    manifest = shards.read_manifest(tmp_path / "old")
    assert len(manifest.shards) == 41 and manifest.data_dir == ""  # one shard per file, in OUT, as begun
    assert shards.validate(tmp_path / "old") == []
    _, fresh = run(tmp_path / "in", tmp_path / "new")
    assert len(fresh.packs) < 41  # a new directory packs
