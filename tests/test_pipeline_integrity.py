"""The patching pipeline against hostile inputs and outputs (issue 11): corrupt compressed
files, odd paths, inputs changed after a run, OUT inside the input directory."""
import gzip
import json

import pytest

from bltdata import shards
from bltdata.patch_job import PatchJob
from bltdata.pipelines import patch as pipeline
from streams import zst_frames


def _lines(n, seed):
    return [json.dumps({"id": f"s{seed}-{i}", "text": f"doc {i} of {seed} " + "wörds " * (i % 50)}) + "\n"
            for i in range(n)]


def _run(inputs, out, **kw):
    job = PatchJob(inputs=[str(i) for i in inputs], output=str(out), model="none", mode="space", **kw)
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
    zst_pieces = ["".join(_lines(300, s)).encode() for s in (4, 5)]
    zst = bytearray(zst_frames(zst_pieces, block_bytes=512))
    zst[len(zst_frames(zst_pieces[:1], block_bytes=512)) + 300] ^= 0x01  # inside frame 2
    (corpus / "b.jsonl.zst").write_bytes(bytes(zst))
    counters, _ = _run([corpus], tmp_path / "out")

    rows = [r for p in shards.shard_files(tmp_path / "out") for r in shards.iter_rows(p)]
    truth = {json.loads(line)["id"]: json.loads(line)["text"].encode()
             for piece in gz_members + zst_pieces for line in piece.decode().splitlines()}
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


# ----------------------------------------------------------------------------- paths


def test_odd_paths_become_rejects_naming_them_and_the_run_completes(tmp_path, monkeypatch):
    import builtins
    import os

    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(_lines(5, 1)))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.jsonl").write_text("".join(_lines(4, 2)))
    os.symlink(tmp_path / "elsewhere", corpus / "linked")
    os.symlink(tmp_path / "nowhere.jsonl", corpus / "dangling.jsonl")
    os.symlink("loop.jsonl", corpus / "loop.jsonl")
    (corpus / "locked.jsonl").write_text("".join(_lines(3, 3)))
    with open(os.path.join(os.fsencode(corpus), b"caf\xe9.jsonl"), "wb") as fh:
        fh.write("".join(_lines(2, 4)).encode())
    real_open = builtins.open

    def locked_out(file, *args, **kw):  # tests run as root, for whom chmod 000 changes nothing
        if str(file).endswith("locked.jsonl"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", locked_out)
    counters, prepared = _run([corpus], tmp_path / "out")
    assert [f.source for f in prepared.files] == ["a.jsonl", "caf\\xe9.jsonl", "dangling.jsonl", "linked/b.jsonl",
                                                  "locked.jsonl", "loop.jsonl"]
    assert counters["documents"] == 5 + 4 + 2
    rejected = {r["source"]: r["reason"] for r in _rejected(tmp_path / "out")}
    assert sorted(rejected) == ["dangling.jsonl", "locked.jsonl", "loop.jsonl"]
    assert "dangling symbolic link" in rejected["dangling.jsonl"] and "dangling.jsonl" in rejected["dangling.jsonl"]
    assert "symbolic link loop" in rejected["loop.jsonl"]
    assert "Permission denied" in rejected["locked.jsonl"] and "locked.jsonl" in rejected["locked.jsonl"]
    assert shards.read_manifest(tmp_path / "out").totals["rejected"] == 3


@pytest.mark.parametrize("output, message", [
    ("{file}/out", "Not a directory"),
    ("/proc/bltdata-test/out", "No such file or directory"),
])
def test_an_impossible_output_is_one_clear_line(tmp_path, output, message):
    (tmp_path / "a.jsonl").write_text("".join(_lines(3, 1)))
    output = output.format(file=tmp_path / "a.jsonl")
    result = _cli(tmp_path / "a.jsonl", "-o", output)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: cannot use {output} as the output directory: {message}")


def test_a_dangling_input_link_is_one_clear_line(tmp_path):
    import os

    os.symlink(tmp_path / "gone.jsonl", tmp_path / "a.jsonl")
    result = _cli(tmp_path / "a.jsonl", "-o", tmp_path / "out")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"Error: input '{tmp_path / 'a.jsonl'}' is a dangling symbolic link to '{tmp_path / 'gone.jsonl'}'" \
        in result.output


def test_out_inside_the_input_directory_reruns(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(_lines(5, 1)) + "{broken\n")
    first, _ = _run([corpus], corpus / "out")
    assert first["documents"] == 5 and first["rejected"] == 1
    assert (corpus / "out" / "rejected").is_dir()  # a .jsonl the next listing must not pick up
    again, prepared = _run([corpus], corpus / "out")
    assert [f.source for f in prepared.files] == ["a.jsonl"] and prepared.pending == []
    assert shards.read_manifest(corpus / "out").totals["documents"] == 5


def _rejects_corpus(root):
    root.mkdir()
    (root / "a.jsonl").write_text("".join(_lines(20, 1)[:7]) + "{broken\n" + json.dumps({"text": 3}) + "\n"
                                  + "".join(_lines(20, 1)[7:]))
    (root / "b.jsonl").write_text("".join(_lines(12, 2)))  # no rejects
    return root


@pytest.mark.parametrize("lost", ["missing", "short", "stale"])
def test_a_pack_whose_rejects_did_not_land_is_redone_identically(tmp_path, lost):
    """Killed after a pack's completion record but before its rejects file was written (the two
    are separate branches of the graph): the re-run redoes that pack, and only it."""
    from bltdata import jobs

    corpus = _rejects_corpus(tmp_path / "in")
    _run([corpus], tmp_path / "whole", shard_bytes=400)
    out = tmp_path / "out"
    _run([corpus], out, shard_bytes=400)
    key_a, key_b = jobs.file_key("a.jsonl"), jobs.file_key("b.jsonl")
    assert jobs.read_done(out, key_a, data_dir="data").rejected == 2
    if lost == "missing":  # the rejects file never written
        (out / "rejected" / f"{key_a}.jsonl").unlink()
    elif lost == "short":  # not possible with atomic writes, but a record count that disagrees
        text = (out / "rejected" / f"{key_a}.jsonl").read_text()
        (out / "rejected" / f"{key_a}.jsonl").write_text(text.splitlines(keepends=True)[0])
    else:  # b had rejects in an earlier attempt; its removal did not land after its record
        (out / "rejected" / f"{key_b}.jsonl").write_text('{"reason": "old"}\n')
    (out / "manifest.json").unlink()  # the run was killed before the manifest
    redo = key_b if lost == "stale" else key_a
    assert jobs.read_done(out, redo, data_dir="data") is None
    assert jobs.read_done(out, key_b if redo == key_a else key_a, data_dir="data") is not None

    counters, prepared = _run([corpus], out, shard_bytes=400)
    assert [p.key for p in prepared.pending_packs] == [redo]
    assert counters["rejected"] == (0 if lost == "stale" else 2)
    assert _user_files(out) == _user_files(tmp_path / "whole") and len(_user_files(out)) > 3
    assert shards.read_manifest(out).totals["rejected"] == 2 == len(_rejected(out))


# ----------------------------------------------------------------------------- stale inputs


def _user_files(out):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and ".bltdata" not in p.parts}


def test_an_input_changed_after_its_run_is_refused_then_redone_exactly(tmp_path):
    import os

    from bltdata import jobs

    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(_lines(40, 1)))
    (corpus / "b.jsonl").write_text("".join(_lines(10, 2)))
    out = tmp_path / "out"
    _run([corpus], out, shard_bytes=300)
    record = jobs.read_done(out, jobs.file_key("a.jsonl"), data_dir="data")
    assert record.input["size"] == (corpus / "a.jsonl").stat().st_size and len(record.shards) > 3

    (corpus / "a.jsonl").write_text("".join(_lines(3, 9)))  # fewer shards than before
    with pytest.raises(jobs.StaleInputs) as err:
        _run([corpus], out, shard_bytes=300)
    message = str(err.value)
    assert "a.jsonl: " in message and "b.jsonl" not in message and "size" in message
    assert str(jobs.done_path(out, jobs.file_key("a.jsonl"))) in message

    same_size = (corpus / "b.jsonl").read_text().replace("doc 1 ", "doc X ", 1)
    (corpus / "b.jsonl").write_text(same_size)
    stat = (corpus / "b.jsonl").stat()
    os.utime(corpus / "b.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(jobs.StaleInputs, match="b.jsonl: mtime_ns"):
        _run([corpus], out, shard_bytes=300)

    for source in ("a.jsonl", "b.jsonl"):  # what the message says to do
        os.remove(jobs.done_path(out, jobs.file_key(source)))
    _run([corpus], out, shard_bytes=300)
    _run([corpus], tmp_path / "fresh", shard_bytes=300)
    assert _user_files(out) == _user_files(tmp_path / "fresh") and len(_user_files(out)) > 2


def test_the_cli_refuses_a_changed_input_naming_it(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(_lines(5, 1)))
    assert _cli(tmp_path / "a.jsonl", "-o", tmp_path / "out").exit_code == 0
    (tmp_path / "a.jsonl").write_text("".join(_lines(6, 1)))
    result = _cli(tmp_path / "a.jsonl", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "1 input(s) changed" in result.output and "a.jsonl: size" in result.output


def test_an_input_changing_while_it_is_read_fails_the_run(tmp_path, monkeypatch):
    from bltdata import fs

    (tmp_path / "a.jsonl").write_text("".join(_lines(5, 1)))
    real_stat, calls = fs.input_stat, []

    def drifting(path):  # the file's stat differs between the start and the end of its read
        calls.append(path)
        found = real_stat(path)
        return dict(found, mtime_ns=found["mtime_ns"] + len(calls))

    monkeypatch.setattr(fs, "input_stat", drifting)
    with pytest.raises(Exception, match="a.jsonl changed while it was being read"):
        _run([tmp_path / "a.jsonl"], tmp_path / "out")
    assert len(calls) == 2 and not list((tmp_path / "out" / ".bltdata" / "done").glob("*.json"))
