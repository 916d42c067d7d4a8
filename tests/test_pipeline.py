"""The Beam patching pipeline end to end (FnApiRunner, tiny model, corpora made here)."""
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from bltdata import jobs, readers, shards
from bltdata.shards import stored_precision
from bltdata.patch_job import PatchJob, prepare
from bltdata.patching import PatcherConfig, patch_lengths
from bltdata.pipelines import patch as pipeline


def texts(n, seed):
    rng = np.random.default_rng(seed)
    words = ["the", "patch", "byte", "entropy", "model", "ünïcode", "日本", "x", "\n", "  "]
    return [" ".join(rng.choice(words, size=int(rng.integers(0, 60)))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A mixed corpus: jsonl with bad lines, .zst, .gz, txt (invalid UTF-8), parquet, a big doc."""
    root = tmp_path_factory.mktemp("corpus")
    lines = [json.dumps({"id": f"a{i}", "text": t}) for i, t in enumerate(texts(40, 1))]
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"text": 17}))
    lines.insert(12, json.dumps({"id": "empty", "text": ""}))
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    zst_lines = [json.dumps({"text": t}) for t in texts(30, 2)] + [json.dumps({"text": "big " * 5000})]
    (root / "sub").mkdir()
    (root / "sub" / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(("\n".join(zst_lines) + "\n").encode()))
    gz_lines = [json.dumps({"content": t}) for t in texts(20, 3)]
    (root / "c.jsonl.gz").write_bytes(gzip.compress(("\n".join(gz_lines) + "\n").encode()))
    (root / "d.txt").write_bytes(b"caf\xe9 is not utf-8 \xff\xfe and that is fine\n")
    pq.write_table(pa.table({"text": texts(25, 4)[:24] + [None]}), root / "e.parquet")
    return root


def expected_documents(root):
    docs, rejects = [], []
    for f in readers.list_inputs([str(root)]):
        for record in readers.read_input(f):
            (docs if isinstance(record, readers.Document) else rejects).append(record)
    return docs, rejects


def run(corpus, out, model, **kw):
    workers = kw.pop("workers", 1)
    job = PatchJob(inputs=[str(corpus)], output=str(out), model=model, **kw)
    result, prepared = pipeline.run_job(job, workers=workers)
    return pipeline.metric_totals(result), prepared


def digests(out):
    """sha256 of every file a user sees: shards, manifest, rejected records."""
    out = Path(out)
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".bltdata" not in p.parts)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def all_rows(out):
    rows = []
    for path in shards.shard_files(out):
        rows.extend(shards.iter_rows(path))
    return rows


@pytest.fixture(scope="module")
def baseline(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "out"
    counters, _ = run(corpus, out, tiny_model, store_entropies=True, batch_bytes=4096, shard_bytes=3000)
    return out, counters


def test_every_document_is_in_a_shard_or_rejected(corpus, baseline):
    out, counters = baseline
    assert shards.validate(out) == []
    docs, rejects = expected_documents(corpus)
    rows = all_rows(out)
    assert len(rows) == len(docs) > 100
    assert sorted((r["doc_id"], r["bytes"]) for r in rows) == sorted((d.doc_id, d.data) for d in docs)
    rejected = [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted((r["source"], r["position"]) for r in rejected) == sorted((r.source, r.position) for r in rejects)
    assert len(rejected) == 3  # malformed line, non-string text, null parquet text
    manifest = shards.read_manifest(out)
    assert manifest.totals["documents"] == len(docs) == counters["documents"]
    assert manifest.totals["bytes"] == sum(len(d.data) for d in docs) == counters["bytes"]
    assert manifest.totals["rejected"] == 3 == counters["rejected"]
    assert any(r["bytes"] == b"" and r["num_patches"] == 0 for r in rows)
    assert any(b"\xff\xfe" in r["bytes"] for r in rows)
    assert max(r["num_bytes"] for r in rows) > 4096  # larger than the inference batch budget


def test_rows_keep_input_order_within_a_source(corpus, baseline):
    out, _ = baseline
    docs, _ = expected_documents(corpus)
    by_source = {}
    for row in all_rows(out):
        by_source.setdefault(row["source"], []).append(row["doc_id"])
    assert len(by_source) == 5
    for source, ids in by_source.items():
        assert ids == [d.doc_id for d in docs if d.source == source]


def test_patch_lengths_equal_the_patcher_on_stored_entropies(baseline):
    out, _ = baseline
    config = PatcherConfig.from_dict(shards.read_manifest(out).patcher)
    rows = [r for r in all_rows(out) if r["num_bytes"]]
    assert len(rows) > 100
    for row in rows:
        entropies = stored_precision(np.asarray(row["entropies"], dtype=np.float32))
        expected = patch_lengths(config, row["bytes"], entropies[: row["num_bytes"]])
        assert row["patch_lengths"] == expected.tolist(), row["doc_id"]


def test_entropies_equal_the_engine_on_each_document_alone(tiny_model, baseline):
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine

    out, _ = baseline
    engine = EntropyEngine(load_checkpoint(tiny_model), batch_bytes=1 << 20)
    rows = all_rows(out)[:20]
    for row in rows:
        alone = engine.score([row["bytes"]])[0]
        np.testing.assert_array_equal(np.asarray(row["entropies"], np.float16), alone.astype(np.float16))


def test_identical_across_batch_budgets_and_workers(corpus, tiny_model, baseline, tmp_path):
    out, _ = baseline
    run(corpus, tmp_path / "b", tiny_model, store_entropies=True, batch_bytes=100_000, shard_bytes=3000)
    assert digests(tmp_path / "b") == digests(out)
    run(corpus, tmp_path / "w", tiny_model, store_entropies=True, batch_bytes=4096, shard_bytes=3000, workers=2)
    assert digests(tmp_path / "w") == digests(out)


def test_killed_run_is_completed_identically(corpus, tiny_model, baseline, tmp_path, reading_fails):
    out, _ = baseline
    with reading_fails("sub/b.jsonl.zst"), pytest.raises(Exception, match="injected failure"):
        run(corpus, tmp_path / "k", tiny_model, store_entropies=True, batch_bytes=4096, shard_bytes=3000)
    assert not (tmp_path / "k" / "manifest.json").exists()
    done_before = sorted(p.name for p in (tmp_path / "k" / ".bltdata" / "done").iterdir())
    counters, prepared = run(corpus, tmp_path / "k", tiny_model, store_entropies=True, batch_bytes=4096, shard_bytes=3000)
    assert len(prepared.pending_packs) == len(prepared.packs) - len(done_before)  # completion is per pack
    assert len(prepared.pending) >= 1
    assert digests(tmp_path / "k") == digests(out)
    assert not list((tmp_path / "k").glob(".*.tmp"))


def test_rerun_on_finished_output_skips_everything(corpus, tiny_model, baseline, tmp_path):
    out, _ = baseline
    before = digests(out)
    counters, prepared = run(corpus, out, tiny_model, store_entropies=True, batch_bytes=4096, shard_bytes=3000)
    assert prepared.pending == [] and len(prepared.files) == 5
    assert counters.get("documents", 0) == 0
    assert digests(out) == before


def test_other_parameters_on_the_same_output_are_refused(corpus, tiny_model, baseline):
    out, _ = baseline
    with pytest.raises(jobs.JobMismatch, match="patcher"):
        run(corpus, out, tiny_model, store_entropies=True, mode="monotonic", shard_bytes=3000)


@pytest.mark.parametrize("mode", ["space", "static", "byte"])
def test_model_free_modes(corpus, tmp_path, mode):
    counters, prepared = run(corpus, tmp_path / mode, "no-model-needed", mode=mode, patch_size=3, max_patch_length=8)
    assert prepared.entropy_model is None
    assert shards.validate(tmp_path / mode) == []
    rows = all_rows(tmp_path / mode)
    assert len(rows) == counters["documents"] > 100
    config = PatcherConfig(mode=mode, patch_size=3, max_patch_length=8)
    for row in rows:
        assert row["patch_lengths"] == patch_lengths(config, row["bytes"]).tolist()
        assert max(row["patch_lengths"], default=1) <= 8


def test_target_patch_size_calibrates_the_threshold(corpus, tiny_model, tmp_path):
    _, prepared = run(corpus, tmp_path / "t", tiny_model, target_patch_size=3.0)
    manifest = shards.read_manifest(tmp_path / "t")
    assert manifest.params["target_patch_size"] == 3.0
    assert manifest.patcher["threshold"] == prepared.patcher.threshold
    assert 2.0 < manifest.totals["bytes"] / manifest.totals["patches"] < 4.5


def test_dataflow_options_build_the_graph_offline(corpus, tmp_path):
    """DataflowRunner's options parse and the graph converts to a runner API proto; nothing is submitted."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions

    job, beam_args, run = pipeline.parse_args([
        str(corpus), "--output", str(tmp_path / "df"), "--mode", "space", "--runner", "DataflowRunner",
        "--project=my-project", "--region=us-central1", "--temp_location=gs://bucket/tmp",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--sdk_container_image=us-docker.pkg.dev/p/r/bltdata:latest", "--machine_type=g2-standard-8",
    ])
    options = pipeline.beam_options(beam_args, workers=run.workers)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(GoogleCloudOptions).project == "my-project"
    assert options.view_as(WorkerOptions).sdk_container_image.endswith("bltdata:latest")
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    p = beam.Pipeline(options=options)
    pipeline.build_pipeline(p, prepare(job))
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"PatchCorpus/ReadDocumentBatches", "PatchCorpus/WriteShards", "PatchCorpus/WriteManifest"} <= names


def test_compile_flag_reaches_the_workers_engine(corpus, tmp_path, tiny_model):
    """`--compile` travels job → RunInference handler → engine (compilation itself is lazy)."""
    from torch._dynamo.eval_frame import OptimizedModule

    job, _, _ = pipeline.parse_args([str(corpus), "-o", str(tmp_path / "c"), "--model", str(tiny_model), "--compile"])
    assert job.compile
    compiled = pipeline.EntropyModelHandler(job.model, device="cpu", batch_bytes=None, compile=job.compile).load_model()
    eager = pipeline.EntropyModelHandler(job.model, device="cpu", batch_bytes=None).load_model()
    assert isinstance(compiled._forward, OptimizedModule)
    assert not isinstance(eager._forward, OptimizedModule)
