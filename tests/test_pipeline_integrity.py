"""The patching pipeline against hostile inputs and outputs (issue 11): corrupt compressed
files, odd paths, inputs changed after a run, OUT inside the input directory."""
import gzip
import io
import json

import pytest
import zstandard

from bltdata import shards
from bltdata.pipelines import patch as pipeline


def _lines(n, seed):
    return [json.dumps({"id": f"s{seed}-{i}", "text": f"doc {i} of {seed} " + "wörds " * (i % 50)}) + "\n"
            for i in range(n)]


def _zst_frames(pieces):
    out = io.BytesIO()
    for piece in pieces:
        with zstandard.ZstdCompressor(write_checksum=True).stream_writer(out, closefd=False) as writer:
            for k in range(0, len(piece), 512):
                writer.write(piece[k: k + 512])
                writer.flush(zstandard.FLUSH_BLOCK)
    return out.getvalue()


def _run(inputs, out, **kw):
    job = pipeline.PatchJob(inputs=[str(i) for i in inputs], output=str(out), model="none", mode="space", **kw)
    result, prepared = pipeline.run_job(job)
    return pipeline.metric_totals(result), prepared


def _rejected(out):
    return [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_a_flipped_byte_in_gz_and_zst_inputs_never_reaches_a_shard(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    gz_members = ["".join(_lines(300, s)).encode() for s in (1, 2, 3)]
    gz = bytearray(b"".join(gzip.compress(m, mtime=0) for m in gz_members))
    first = len(gzip.compress(gz_members[0], mtime=0))
    gz[first + len(gzip.compress(gz_members[1], mtime=0)) // 2] ^= 0x04  # inside member 2's deflate data
    (corpus / "a.jsonl.gz").write_bytes(bytes(gz))
    zst_frames = ["".join(_lines(300, s)).encode() for s in (4, 5)]
    zst = bytearray(_zst_frames(zst_frames))
    zst[len(_zst_frames(zst_frames[:1])) + 300] ^= 0x01  # inside frame 2
    (corpus / "b.jsonl.zst").write_bytes(bytes(zst))
    counters, _ = _run([corpus], tmp_path / "out")

    rows = [r for p in shards.shard_files(tmp_path / "out") for r in shards.iter_rows(p)]
    truth = {json.loads(line)["id"]: json.loads(line)["text"].encode()
             for piece in gz_members + zst_frames for line in piece.decode().splitlines()}
    assert len(rows) == 600 and all(truth[r["doc_id"]] == r["bytes"] for r in rows)
    assert {r["doc_id"].split("-")[0] for r in rows} == {"s1", "s4"}  # the first unit of each, whole
    rejected = _rejected(tmp_path / "out")
    by_source = {s: [r for r in rejected if r["source"] == s] for s in ("a.jsonl.gz", "b.jsonl.zst")}
    for source, unit in (("a.jsonl.gz", "gzip member 2"), ("b.jsonl.zst", "zstd frame 2")):
        assert min(r["position"] for r in by_source[source]) == 301  # the first line not in a shard
        assert unit in by_source[source][-1]["reason"] and "stream after line" in by_source[source][-1]["reason"]
    manifest = shards.read_manifest(tmp_path / "out")
    assert manifest.totals["rejected"] == len(rejected) == counters["rejected"] > 2
    assert manifest.totals["documents"] == 600


# ----------------------------------------------------------------------------- the command line


def _cli(*args):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    return CliRunner().invoke(main, ["patch", *map(str, args), "--mode", "space", "--no-progress"])


def test_json_reject_reasons_read_well_and_the_summary_says_where_rejects_are(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "a\tb"}\n{"text": "unterminated')
    result = _cli(corpus, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    reasons = [r["reason"] for r in _rejected(tmp_path / "out")]
    assert reasons == ["malformed JSON: Invalid control character at col 12",
                       "malformed JSON: Unterminated string starting at col 10"]
    assert f"2 records in {tmp_path / 'out' / 'rejected'}" in result.output
