"""The patching pipeline's DoFns one by one: `beam.Create` in, `assert_that` on what comes out (FnApiRunner)."""
import json

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from bltdata import jobs, shards
from bltdata.batching import DocBatch, iter_doc_batches
from bltdata.patch_job import PatchJob, prepare
from bltdata.patching import PatcherConfig, patch_lengths
from bltdata.pipelines import patch as pipeline
from bltdata.readers import Document, InputFile


def _pipeline():
    return beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))


def _lines(n):
    return [json.dumps({"id": f"d{i}", "text": f"document {i} " + "wörd " * (i % 7)}) + "\n" for i in range(n)]


def _batches(n_docs=5, batch_bytes=40):
    docs = [Document(f"d{i}", "a.jsonl", i + 1, f"doc {i} ".encode() * (i + 1)) for i in range(n_docs)]
    return list(iter_doc_batches(docs, source="a.jsonl", batch_bytes=batch_bytes, shard_bytes=1 << 20))


def _summary(batch: DocBatch):
    """What a test compares of a DocBatch (its arrays as lists)."""
    return (batch.key, batch.order, tuple(batch.doc_ids), batch.last_in_file, batch.rejected,
            None if batch.patch_lengths is None else tuple(tuple(p.tolist()) for p in batch.patch_lengths))


def test_read_document_batches_emits_batches_in_file_order_and_the_rejects_whole(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_text("".join(_lines(3)) + "{broken\n" + "".join(_lines(6)[3:]))
    pack = jobs.Pack("k", (InputFile(str(tmp_path / "a.jsonl"), "a.jsonl", "jsonl"),
                           InputFile(str(tmp_path / "gone.jsonl"), "gone.jsonl", "jsonl")))
    job = PatchJob(inputs=[str(tmp_path)], output=str(tmp_path / "out"), model="none", mode="space", batch_bytes=1)
    monkeypatch.setattr(pipeline, "WORK_UNIT_BYTES", 64)  # several batches from six small documents
    with _pipeline() as p:
        read = (p | beam.Create([pack])
                | beam.ParDo(pipeline.ReadDocumentBatches(job)).with_outputs(pipeline.REJECTS, main="batches"))
        assert_that(read.batches | beam.Map(lambda b: (b.order, tuple(b.doc_ids), b.last_in_file, b.rejected)),
                    equal_to([((0, 0), ("d0", "d1", "d2", "d3"), False, 0), ((0, 1), ("d4", "d5"), True, 2)]),
                    label="batches")
        rejects = read[pipeline.REJECTS] | beam.Map(
            lambda kv: (kv[0], [(r["source"], r["position"], "gone.jsonl" in r["reason"]) for r in kv[1]]))
        assert_that(rejects, equal_to([("k", [("a.jsonl", 4, False), ("gone.jsonl", 0, True)])]), label="rejects")


def test_write_rejects_writes_the_file_whole_and_removes_a_stale_one(tmp_path):
    stale = tmp_path / "rejected" / "empty.jsonl"
    stale.parent.mkdir()
    stale.write_text('{"reason": "from an earlier attempt"}\n')
    rows = [{"source": "a.jsonl", "position": 4, "reason": "bad"}, {"source": "a.jsonl", "position": 9, "reason": "x"}]
    with _pipeline() as p:
        keys = p | beam.Create([("full", rows), ("empty", [])]) | beam.ParDo(pipeline.WriteRejects(str(tmp_path)))
        assert_that(keys, equal_to(["full", "empty"]))
    written = (tmp_path / "rejected" / "full.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == rows
    assert not stale.exists()


def test_patch_batches_patches_every_document_as_the_patcher_does_alone():
    config = PatcherConfig(mode="space")
    batches = _batches()
    assert len(batches) > 1
    expected = [(b.key, b.order, tuple(b.doc_ids), b.last_in_file, 0,
                 tuple(tuple(patch_lengths(config, d).tolist()) for d in b.data)) for b in batches]
    assert sum(len(e[5]) for e in expected) == 5
    with _pipeline() as p:
        patched = p | beam.Create(batches) | beam.ParDo(pipeline.PatchBatches(config))
        assert_that(patched | beam.Map(_summary), equal_to(expected))


def test_score_doc_batches_gives_each_document_the_engines_entropies(tiny_model):
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine

    batches = _batches() + [DocBatch("empty.jsonl", "e", 0, 0, last_in_shard=True, last_in_file=True)]
    engine = EntropyEngine(load_checkpoint(tiny_model, device="cpu"), device="cpu", batch_bytes=4096,
                           precision="fp32")
    expected = {d: engine.score([d])[0].tolist() for b in batches for d in b.data}
    assert len(expected) == 5 and all(len(h) == len(d) + 1 for d, h in expected.items())
    handler = pipeline.EntropyModelHandler(tiny_model, device="cpu", batch_bytes=4096, threads=1,
                                           precision="fp32")
    with _pipeline() as p:
        scored = p | beam.Create(batches) | beam.ParDo(pipeline.ScoreDocBatches(handler))
        assert_that(scored | beam.Map(lambda b: [(bytes(d), h.tolist()) for d, h in zip(b.data, b.entropies)]),
                    equal_to([[(d, expected[d]) for d in b.data] for b in batches]))


def test_write_shards_writes_a_packs_shards_and_yields_its_source_once(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(_lines(5)))
    prepared = prepare(PatchJob(inputs=[str(tmp_path / "in")], output=str(tmp_path / "out"), model="none",
                                mode="space"))
    (pack,) = prepared.pending_packs
    docs = [Document(f"d{i}", "a.jsonl", i + 1, f"doc {i} ".encode() * (i + 1)) for i in range(5)]
    batches = list(iter_doc_batches(docs, source="a.jsonl", key=pack.key, batch_bytes=30, shard_bytes=60))
    for b in batches:
        b.patch_lengths = [patch_lengths(prepared.patcher, d) for d in b.data]
    assert len(batches) > 2 and batches[-1].shard_index > 0
    with _pipeline() as p:
        sources = p | beam.Create(batches, reshuffle=False) | beam.ParDo(pipeline.WriteShards(prepared))
        assert_that(sources, equal_to(["a.jsonl"]))
    record = jobs.read_done(tmp_path / "out", pack.key, data_dir=jobs.data_dir_of(prepared.params))
    assert record.documents == 5 and len(record.shards) == batches[-1].shard_index + 1
    rows = [r for s in record.shards for r in shards.iter_rows(tmp_path / "out" / "data" / s.file)]
    assert [r["doc_id"] for r in rows] == [f"d{i}" for i in range(5)]
    assert all(np.sum(r["patch_lengths"]) == len(r["bytes"]) for r in rows)
