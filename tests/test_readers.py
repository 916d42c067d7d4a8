"""Tests for bltdata.readers: every format, every kind of bad record, input listing."""
from __future__ import annotations

import gzip
import io
import json
import os
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltdata.readers import (
    Document,
    FieldMissing,
    InputFile,
    Reject,
    check_text_field,
    detect_format,
    list_inputs,
    read_input,
    read_records,
)
from streams import zst_frames


def _read(data: bytes, fmt: str, source: str = "f", **kw) -> list:
    return list(read_records(io.BytesIO(data), source, fmt, **kw))


def _docs(records) -> list[Document]:
    return [r for r in records if isinstance(r, Document)]


def _rejects(records) -> list[Reject]:
    return [r for r in records if isinstance(r, Reject)]


def _jsonl(objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


GOOD = [{"id": f"d{i}", "text": f"document {i} ünïcode ✓ " * (i + 1)} for i in range(40)]


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "name, fmt",
    [("a.jsonl", "jsonl"), ("dir/A.JSONL.ZST", "jsonl.zst"), ("x.jsonl.gz", "jsonl.gz"),
     ("t.txt", "txt"), ("p.parquet", "parquet"), ("x.json", None), ("x.zst", None),
     ("x.jsonl.bz2", None), ("README", None)],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_jsonl_ids_fields_and_line_endings():
    data = (
        b'\xef\xbb\xbf{"id": "a", "text": "first"}\r\n'  # BOM on line 1, CRLF
        b"\n"
        b"   \t \r\n"  # whitespace-only lines are skipped
        b'{"text": "no id"}\n'
        b'{"id": null, "text": "null id"}\n'
        b'{"id": 17, "text": "int id"}\n'
        b'{"id": "", "text": "empty id"}\n'
        b'{"id": "c", "content": "from content"}\n'
        b'{"id": "e", "text": ""}\n'
        b'{"id": "t", "text": "both", "content": "ignored"}\n'
        b'{"id": "u", "text": "caf\\u00e9 \\ud83d\\ude00 \\u0000"}'  # last line: no newline
    )
    docs = _read(data, "jsonl", source="dir/a.jsonl")
    assert _rejects(docs) == []
    assert [(d.doc_id, d.position, d.data) for d in docs] == [
        ("a", 1, b"first"),
        ("dir/a.jsonl:4", 4, b"no id"),
        ("dir/a.jsonl:5", 5, b"null id"),
        ("17", 6, b"int id"),
        ("dir/a.jsonl:7", 7, b"empty id"),
        ("c", 8, b"from content"),
        ("e", 9, b""),
        ("t", 10, b"both"),
        ("u", 11, "café 😀 \x00".encode()),
    ]
    assert all(d.source == "dir/a.jsonl" for d in docs)


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"text": "unterminated}', "malformed JSON"),
        (b'{"text": "a",}', "malformed JSON"),
        (b"[1, 2]", "not an object"),
        (b'"just a string"', "not an object"),
        (b"null", "not an object"),
        (b'{"id": "x"}', "missing text field 'text'"),
        (b'{"text": 5}', "not a string"),
        (b'{"text": null}', "not a string"),
        (b'{"text": ["a"]}', "not a string"),
        (b'{"text": "\\ud800 lone"}', "lone surrogate"),
        (b'{"text": "ok \xff\xfe bytes"}', "invalid UTF-8"),
        (b'{"id": 1.5, "text": "a"}', "id field 'id'"),
        (b'{"id": true, "text": "a"}', "id field 'id'"),
        (b'{"id": {"k": 1}, "text": "a"}', "id field 'id'"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
def test_jsonl_bad_records_are_rejected_not_dropped(line, reason):
    data = b'{"text": "before"}\n' + line + b'\n{"text": "after"}\n'
    records = _read(data, "jsonl", source="s.jsonl")
    assert [r.data for r in _docs(records)] == [b"before", b"after"]
    rejects = _rejects(records)
    assert len(rejects) == 1
    assert rejects[0].source == "s.jsonl" and rejects[0].position == 2
    assert reason in rejects[0].reason
    assert records[1] is rejects[0]  # in stream order


def test_jsonl_custom_fields_have_no_fallback():
    data = _jsonl([{"key": 3, "body": "b"}, {"key": 4, "content": "c"}])
    records = _read(data, "jsonl", text_field="body", id_field="key")
    assert [(d.doc_id, d.data) for d in _docs(records)] == [("3", b"b")]
    assert [r.reason for r in _rejects(records)] == ["missing text field 'body'"]


def test_reject_to_json():
    assert Reject("a.jsonl", 3, "why").to_json() == {"source": "a.jsonl", "position": 3, "reason": "why"}


def test_txt_keeps_bytes_exactly():
    raw = b"\xff\xfe not utf-8 \x00\r\n\xc3(\n"
    (doc,) = _read(raw, "txt", source="t/x.txt")
    assert doc == Document("t/x.txt:0", "t/x.txt", 0, raw)
    (empty,) = _read(b"", "txt", source="e.txt")
    assert empty.data == b"" and empty.doc_id == "e.txt:0"


def test_unknown_format_raises():
    with pytest.raises(ValueError, match="unknown format"):
        read_records(io.BytesIO(b""), "f", "csv")


def test_raw_and_read_only_streams(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(GOOD))

    class ReadOnly:  # only .read(), like some remote-file wrappers
        def __init__(self, fh):
            self.read = fh.read

    with open(path, "rb", buffering=0) as raw:
        from_raw = _docs(read_records(raw, "a.jsonl", "jsonl"))
        assert not raw.closed  # the caller keeps ownership
    with open(path, "rb") as fh:
        from_read_only = _docs(read_records(ReadOnly(fh), "a.jsonl", "jsonl"))
    assert len(from_raw) == len(GOOD) > 0
    assert from_raw == from_read_only


# ----------------------------------------------------------------------------- zstd


def _zst(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def test_zstd_multi_frame_and_skippable_frame():
    payload = _jsonl(GOOD)
    half = len(payload) // 2
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"12345"
    data = _zst(payload[:half]) + skippable + _zst(payload[half:], write_checksum=True)
    records = _read(data, "jsonl.zst")
    assert _rejects(records) == []
    assert [d.data for d in records] == [g["text"].encode() for g in GOOD]


def test_zstd_stream_without_content_size():
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as writer:
        for line in _jsonl(GOOD).splitlines(keepends=True):
            writer.write(line)
            writer.flush(zstandard.FLUSH_BLOCK)  # many blocks per frame
    records = _read(out.getvalue(), "jsonl.zst")
    assert _rejects(records) == [] and len(records) == len(GOOD)


def _check_cut_short(records, expected, unit_docs, kind):
    """Shards get whole units only: docs are an exact prefix that ends at a unit boundary;
    the lines after it are rejects, the last one standing for the rest of the file."""
    docs, rejects = _docs(records), _rejects(records)
    assert [d.data for d in docs] == expected[: len(docs)] and len(docs) in unit_docs
    assert records[: len(docs)] == docs and rejects == records[len(docs):]
    assert [r.position for r in rejects] == list(range(len(docs) + 1, len(docs) + 1 + len(rejects)))
    assert all("not proven intact" in r.reason for r in rejects[:-1])
    assert f"{kind} stream" in rejects[-1].reason
    return len(docs)


@pytest.mark.parametrize("checksum", [False, True])
def test_zstd_truncated_keeps_the_good_frames_then_rejects(checksum):
    payload = _jsonl(GOOD * 50)
    first = _zst(payload[: len(payload) // 2], write_checksum=checksum)
    data = first + _zst(payload[len(payload) // 2:], write_checksum=checksum)
    expected = [g["text"].encode() for g in GOOD * 50]
    # A cut exactly between frames leaves a valid (shorter) stream: nothing to detect.
    assert _rejects(_read(data[: len(first)], "jsonl.zst")) == []
    kept = []
    for cut in (1, 3, 7, len(first) // 2, len(first) - 1, len(first) + 2, len(data) - 5, len(data) - 1):
        records = _read(data[:cut], "jsonl.zst", source="z.jsonl.zst")
        kept.append(_check_cut_short(records, expected, (0, 1000), "truncated zstd"))
    assert kept == [0] * 5 + [1000] * 3


def test_zstd_corrupt_frame_and_not_zstd():
    payload = _jsonl(GOOD * 20)
    first = _zst(payload)
    second = bytearray(_zst(payload))
    second[len(second) // 2: len(second) // 2 + 8] = b"\xff" * 8
    records = _read(first + bytes(second), "jsonl.zst")
    expected = [g["text"].encode() for g in GOOD * 20] * 2
    assert _check_cut_short(records, expected, (800,), "corrupt zstd") == 800
    assert "zstd frame 2" in records[-1].reason

    (reject,) = _read(b"this is not zstd at all\n", "jsonl.zst")
    assert reject.position == 1 and "corrupt zstd" in reject.reason


# ----------------------------------------------------------------------------- gzip


def test_gzip_multi_member_and_truncated():
    payload = _jsonl(GOOD * 30)
    data = gzip.compress(payload[:1000]) + gzip.compress(payload[1000:])
    expected = [g["text"].encode() for g in GOOD * 30]
    assert [d.data for d in _read(data, "jsonl.gz")] == expected
    whole = payload[:1000].count(b"\n")  # lines complete in member 1; the next one ends in member 2
    kept = [_check_cut_short(_read(data[:cut], "jsonl.gz"), expected, (0, whole), "truncated gzip")
            for cut in (5, len(data) // 2, len(data) - 3)]
    assert kept == [0, whole, whole] and whole > 0


def test_gzip_corrupt():
    data = bytearray(gzip.compress(_jsonl(GOOD * 30)))
    data[-6] ^= 0xFF  # the CRC / size trailer
    records = _read(bytes(data), "jsonl.gz")
    assert _check_cut_short(records, [g["text"].encode() for g in GOOD * 30], (0,), "corrupt gzip") == 0
    assert len(records) > len(GOOD) and "gzip member 1" in records[-1].reason
    (reject,) = _read(b"not gzip\n", "jsonl.gz")
    assert reject.position == 1 and "gzip" in reject.reason


# ----------------------------------------------------------------------------- parquet


def _parquet_bytes(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_parquet_text_columns_with_null(kind):
    values = ["héllo", None, "", "x" * 1000] if pa.types.is_string(kind) or pa.types.is_large_string(
        kind) else [b"\xff\x00bin", None, b"", b"x" * 1000]
    table = pa.table({"text": pa.array(values, kind), "id": pa.array([7, 8, None, 10], pa.int64())})
    records = _read(_parquet_bytes(table), "parquet", source="p.parquet")
    assert [type(r).__name__ for r in records] == ["Document", "Reject", "Document", "Document"]
    assert records[1] == Reject("p.parquet", 1, "text column 'text' is null")
    expected = [v.encode() if isinstance(v, str) else v for v in values]
    assert [(d.doc_id, d.position, d.data) for d in _docs(records)] == [
        ("7", 0, expected[0]), ("p.parquet:2", 2, b""), ("10", 3, expected[3])]


def test_parquet_content_fallback_many_batches_and_string_ids():
    n = 1000  # several batches and row groups
    table = pa.table({"id": [f"r{i}" for i in range(n)], "content": [f"row {i}" for i in range(n)]})
    records = _read(_parquet_bytes(table, row_group_size=300), "parquet")
    assert len(records) == n
    assert all(d.doc_id == f"r{d.position}" and d.data == f"row {d.position}".encode() for d in records)


def test_parquet_bad_schema_and_unreadable_files():
    no_text = _parquet_bytes(pa.table({"body": ["a"]}))
    (reject,) = _read(no_text, "parquet", source="n.parquet")
    assert reject == Reject("n.parquet", 0, "no text column 'text' in parquet columns ['body']")
    (reject,) = _read(_parquet_bytes(pa.table({"text": [1, 2]})), "parquet")
    assert reject.position == 0 and "expected string or binary" in reject.reason
    good = _parquet_bytes(pa.table({"text": ["a", "b"]}))
    for broken in (b"not a parquet file", good[: len(good) // 2], b""):
        (reject,) = _read(broken, "parquet", source="bad.parquet")
        assert reject.source == "bad.parquet" and reject.position == 0
        assert reject.reason.startswith("unreadable parquet")


def test_parquet_corrupt_page_keeps_earlier_rows(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table({"text": [f"row {i} " + "z" * (i % 7) for i in range(600)]})
    pq.write_table(table, path, row_group_size=300, compression="none")
    meta = pq.ParquetFile(path).metadata
    start = meta.row_group(1).column(0).data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start: start + 40] = b"\xee" * 40  # destroy the second row group's page header
    path.write_bytes(bytes(raw))
    records = list(read_input(InputFile(str(path), "c.parquet", "parquet")))
    docs, rejects = _docs(records), _rejects(records)
    assert [d.position for d in docs] == list(range(300))
    assert len(rejects) == 1 and rejects[0].position == 300 and records[-1] is rejects[0]


# ----------------------------------------------------------------------------- listing


def _touch(path, data=b'{"text": "x"}\n'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_list_inputs_directory_glob_and_file(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    for rel in ("b.jsonl", "a/z.jsonl.zst", "a/y.txt", "a/deep/x.parquet", "c.jsonl.gz"):
        _touch(root / rel)
    _touch(root / "notes.md")  # unsupported: skipped in a walk
    _touch(root / ".hidden.jsonl")
    _touch(root / ".git" / "x.jsonl")
    files = list_inputs([str(root)])
    assert [(f.source, f.format) for f in files] == [
        ("a/deep/x.parquet", "parquet"), ("a/y.txt", "txt"), ("a/z.jsonl.zst", "jsonl.zst"),
        ("b.jsonl", "jsonl"), ("c.jsonl.gz", "jsonl.gz")]
    assert all(os.path.isabs(f.path) and os.path.isfile(f.path) for f in files)

    globbed = list_inputs([str(root / "a" / "*")])  # the dir 'deep' is walked too
    assert [f.source for f in globbed] == ["deep/x.parquet", "y.txt", "z.jsonl.zst"]
    recursive = list_inputs([str(root / "**" / "*.jsonl*")])
    assert [f.source for f in recursive] == ["a/z.jsonl.zst", "b.jsonl", "c.jsonl.gz"]
    monkeypatch.chdir(tmp_path)
    relative = list_inputs(["corpus/a/deep/*.parquet", "corpus/b.jsonl"])
    assert [f.source for f in relative] == ["b.jsonl", "x.parquet"]
    assert relative[0].path == str(root / "b.jsonl")


def test_list_inputs_dedupes_and_reports_errors(tmp_path):
    a = _touch(tmp_path / "d" / "a.jsonl")
    _touch(tmp_path / "e" / "a.jsonl")
    twice = list_inputs([str(a), str(a), str(tmp_path / "d" / "*.jsonl")])
    assert [f.source for f in twice] == ["a.jsonl"]
    with pytest.raises(ValueError, match="same source name"):
        list_inputs([str(tmp_path / "d"), str(tmp_path / "e")])
    with pytest.raises(ValueError, match="does not exist") as err:
        list_inputs([str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl" in str(err.value)
    with pytest.raises(ValueError, match="matched nothing"):
        list_inputs([str(tmp_path / "*.parquet")])
    bad = _touch(tmp_path / "notes.csv")
    with pytest.raises(ValueError, match="unsupported suffix") as err:
        list_inputs([str(bad)])
    assert "notes.csv" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no input files"):
        list_inputs([str(tmp_path / "empty")])


def test_read_input_missing_file_is_a_reject(tmp_path):
    for fmt in ("jsonl", "parquet"):
        (reject,) = read_input(InputFile(str(tmp_path / f"gone.{fmt}"), f"gone.{fmt}", fmt))
        assert reject.source == f"gone.{fmt}" and reject.position == 0


# ----------------------------------------------------------------------------- round trip


def _write(path, fmt: str, docs: list[tuple[str | None, str]]) -> None:
    lines = _jsonl([{"text": t} if i is None else {"id": i, "text": t} for i, t in docs])
    if fmt == "jsonl":
        path.write_bytes(lines)
    elif fmt == "jsonl.zst":
        path.write_bytes(_zst(lines))
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress(lines))
    else:
        ids = pa.array([i for i, _ in docs], pa.string())
        pq.write_table(pa.table({"id": ids, "text": pa.array([t for _, t in docs], pa.string())}), path)


_doc_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.text(min_size=1, max_size=8)), st.text(max_size=60)),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=_doc_strategy)
@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.zst", "jsonl.gz", "parquet"])
def test_round_trip_every_format(tmp_path, fmt, docs):
    path = tmp_path / f"rt.{fmt}"
    _write(path, fmt, docs)
    (input_file,) = list_inputs([str(path)])
    records = list(read_input(input_file))
    assert _rejects(records) == [] and len(records) == len(docs)
    first = 1 if fmt != "parquet" else 0
    expected = [(i if i else f"rt.{fmt}:{k + first}", t.encode()) for k, (i, t) in enumerate(docs)]
    assert [(d.doc_id, d.data) for d in records] == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_round_trip_txt_and_binary_parquet(tmp_path, data):
    txt = tmp_path / "b.txt"
    txt.write_bytes(data)
    pq.write_table(pa.table({"text": pa.array([data, data[::-1]], pa.binary())}), tmp_path / "b.parquet")
    by_source = {f.source: list(read_input(f)) for f in list_inputs([str(tmp_path)])}
    assert [d.data for d in by_source["b.txt"]] == [data]
    assert [d.data for d in by_source["b.parquet"]] == [data, data[::-1]]


# ----------------------------------------------------------------------------- memory


def test_zstd_streams_in_constant_memory(tmp_path):
    line = (json.dumps({"text": "x" * 4000 + " héllo"}) + "\n").encode()
    frame = _zst(line * 256, level=1)  # ~1 MB of text per frame
    path = tmp_path / "big.jsonl.zst"
    with open(path, "wb") as fh:
        for _ in range(200):  # ~200 MB uncompressed, ~30 KB on disk
            fh.write(frame)
    tracemalloc.start()
    try:
        count = total = 0
        for record in read_input(InputFile(str(path), "big.jsonl.zst", "jsonl.zst")):
            assert isinstance(record, Document)
            count += 1
            total += len(record.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 256 * 200 and total > 200_000_000
    assert peak < 8_000_000  # a whole-file read would need > 200 MB


# ----------------------------------------------------------------------------- corruption


def _units(payload: bytes, cuts: list[int], fmt: str) -> bytes:
    """`payload` cut at byte offsets `cuts` (inside lines too), each piece its own gzip member
    or checksummed zstd frame of many blocks (one per 40 bytes: a frame's checksum comes
    only after its last block)."""
    bounds = [0, *sorted(set(cuts)), len(payload)]
    pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    if fmt == "jsonl.gz":
        return b"".join(gzip.compress(p, mtime=0) for p in pieces)
    return zst_frames(pieces, block_bytes=40)


def _check_no_forgery(records, truth) -> int:
    """Documents are an exact prefix of the true ones; any true document missing from them is
    covered by the rejects (the first reject is the first missing line; the file ends with
    the reject standing for its unread rest)."""
    docs = _docs(records)
    assert [(d.doc_id, d.position, d.data) for d in docs] == truth[: len(docs)]
    if len(docs) < len(truth):
        rejects = _rejects(records)
        assert rejects and min(r.position for r in rejects) == truth[len(docs)][1]
        assert records[-1] is rejects[-1] and "stream after line" in rejects[-1].reason
    return len(docs)


_TRUTH_OBJS = [{"id": f"d{i}", "text": f"doc {i} " + "ünï ✓ " * (i % 7)} for i in range(30)]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_every_single_byte_flip_is_caught_or_harmless(fmt):
    """Flip each byte of a three-unit stream in turn: never a wrong document."""
    payload = _jsonl(_TRUTH_OBJS)
    truth = [(o["id"], k + 1, o["text"].encode()) for k, o in enumerate(_TRUTH_OBJS)]
    blob = _units(payload, [len(payload) // 3, 2 * len(payload) // 3 + 5], fmt)
    kept, lost = [], 0
    for offset in range(len(blob)):
        corrupted = bytearray(blob)
        corrupted[offset] ^= 0x10
        n = _check_no_forgery(_read(bytes(corrupted), fmt), truth)
        kept.append(n)
        lost += n < len(truth)
    assert len(kept) == len(blob) > 100
    assert lost > len(blob) // 2  # most flips are detected and cost documents, never forge them
    assert set(kept) <= {0, 11, 20, 30}  # only whole units reach the output (lines complete per unit)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=25), data=st.data())
@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_flipped_bytes_never_reach_the_documents(fmt, texts, data):
    payload = _jsonl([{"text": t} for t in texts])
    cuts = data.draw(st.lists(st.integers(1, max(1, len(payload) - 1)), max_size=4))
    blob = bytearray(_units(payload, cuts, fmt))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)),
                               min_size=1, max_size=3))
    for offset, mask in flips:
        blob[offset] ^= mask
    truth = [(f"f:{k + 1}", k + 1, t.encode()) for k, t in enumerate(texts)]
    _check_no_forgery(_read(bytes(blob), fmt), truth)


def test_held_records_spill_to_disk_in_order(monkeypatch):
    from bltdata import compressed

    held = compressed.HeldRecords(memory_bytes=100)
    records = [Document(f"d{i}", "f", i, bytes([i]) * 30) for i in range(10)]
    for r in records:
        held.add(r, len(r.data))
    assert len(held) == 10 and held.spilled == 7
    assert list(held.drain()) == records and len(held) == 0
    held.close()
    # A whole single-member gzip read with nothing held in memory: same documents.
    monkeypatch.setattr(compressed, "HOLD_MEMORY_BYTES", 0)
    data = gzip.compress(_jsonl(GOOD * 5))
    assert [d.data for d in _read(data, "jsonl.gz")] == [g["text"].encode() for g in GOOD * 5]


# ----------------------------------------------------------------------------- odd paths


def test_links_loops_and_odd_names_in_a_walk(tmp_path, caplog):
    root = tmp_path / "in"
    _touch(root / "a.jsonl")
    _touch(tmp_path / "elsewhere" / "b.jsonl")
    os.symlink(tmp_path / "elsewhere", root / "linked")  # a directory link: followed
    os.symlink(root, root / "sub_loop")  # a loop back to the root: walked once
    os.symlink(tmp_path / "nowhere.jsonl", root / "dangling.jsonl")
    os.symlink("self.jsonl", root / "self.jsonl")
    odd = os.path.join(os.fsencode(root), b"caf\xe9.jsonl")
    with open(odd, "wb") as fh:
        fh.write(b'{"text": "x"}\n')
    files = list_inputs([str(root)])
    assert [f.source for f in files] == ["a.jsonl", "caf\\xe9.jsonl", "dangling.jsonl", "linked/b.jsonl",
                                         "self.jsonl"]
    assert "already walked" in caplog.text
    by_source = {f.source: list(read_input(f)) for f in files}
    assert [d.doc_id for d in by_source["caf\\xe9.jsonl"]] == ["caf\\xe9.jsonl:1"]
    (dangling,) = by_source["dangling.jsonl"]
    assert isinstance(dangling, Reject) and "dangling symbolic link" in dangling.reason
    assert "dangling.jsonl" in dangling.reason
    (loop,) = by_source["self.jsonl"]
    assert isinstance(loop, Reject) and "symbolic link loop" in loop.reason
    for name, problem in (("dangling.jsonl", "dangling symbolic link"), ("self.jsonl", "symbolic link loop")):
        with pytest.raises(ValueError, match=problem) as err:
            list_inputs([str(root / name)])
        assert name in str(err.value)


def test_unreadable_inputs_are_rejects_naming_them(tmp_path, monkeypatch):
    import builtins

    locked = _touch(tmp_path / "locked.jsonl")
    locked.chmod(0)
    real_open = builtins.open

    def honour_modes(file, mode="r", *args, **kw):  # tests run as root, who may read mode 000
        if "r" in mode and isinstance(file, (str, os.PathLike)) and os.path.exists(file) \
                and not os.stat(file).st_mode & 0o444:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", honour_modes)
    (reject,) = read_input(InputFile(str(locked), "locked.jsonl", "jsonl"))
    assert reject.position == 0 and "Permission denied" in reject.reason and "locked.jsonl" in reject.reason
    monkeypatch.setattr(builtins, "open", real_open)
    os.mkfifo(tmp_path / "pipe.jsonl")  # opening it would block forever
    (reject,) = read_input(InputFile(str(tmp_path / "pipe.jsonl"), "pipe.jsonl", "jsonl"))
    assert "not a regular file" in reject.reason
    os.symlink("/proc/self/mem", tmp_path / "eio.jsonl.gz")  # opens, then every read fails (EIO), even as root
    (reject,) = read_input(InputFile(str(tmp_path / "eio.jsonl.gz"), "eio.jsonl.gz", "jsonl.gz"))
    assert "read error" in reject.reason
    os.symlink(tmp_path / "missing.parquet", tmp_path / "gone.parquet")
    (reject,) = read_input(InputFile(str(tmp_path / "gone.parquet"), "gone.parquet", "parquet"))
    assert "dangling symbolic link" in reject.reason


def test_the_output_directory_is_not_an_input(tmp_path):
    corpus = tmp_path / "corpus"
    _touch(corpus / "a.jsonl")
    _touch(corpus / "out" / "rejected" / "a.jsonl")  # what a run writes into OUT
    _touch(corpus / "out" / "x.parquet")
    assert [f.source for f in list_inputs([str(corpus)])] == ["a.jsonl", "out/rejected/a.jsonl", "out/x.parquet"]
    assert [f.source for f in list_inputs([str(corpus)], exclude=[str(corpus / "out")])] == ["a.jsonl"]
    assert [f.source for f in list_inputs([str(corpus / "**" / "*.jsonl")], exclude=[str(corpus / "out")])] \
        == ["a.jsonl"]
    for inside in (corpus / "out", corpus / "out" / "x.parquet", corpus / "out" / "rejected"):
        with pytest.raises(ValueError, match="inside the output directory"):
            list_inputs([str(inside)], exclude=[str(corpus / "out")])


# ----------------------------------------------------------------------------- field check


def _field_inputs(tmp_path, name: str, objs) -> list:
    data = _jsonl(objs)
    path = tmp_path / name
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    path.write_bytes(data)
    return list_inputs([str(path)])


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst"])
def test_a_field_no_record_has_is_an_error_naming_the_fields(tmp_path, name):
    files = _field_inputs(tmp_path, name, [{"text": f"t{i}", "id": i, "url": "u"} for i in range(150)])
    check_text_field(files, "text")  # the right field passes
    with pytest.raises(FieldMissing) as err:
        check_text_field(files, "nope")
    assert str(err.value) == (f"{name}: no record among the first 100 has field 'nope' (--text-field); "
                              "their fields: text, id, url")


def test_most_records_without_the_field_is_an_error_a_few_are_rejects(tmp_path):
    few_missing = [{"text": "t"}] * 30 + [{"body": "b"}] * 10  # 25 % missing: rejects, as in the run
    check_text_field(_field_inputs(tmp_path, "few.jsonl", few_missing), "text")
    most_missing = [{"text": "t"}] * 15 + [{"body": "b", "id": 1}] * 25  # 62.5 % of 40 missing
    with pytest.raises(FieldMissing, match=r"^most\.jsonl: 25 of the first 40 records have no field 'text' "
                                           r"\(--text-field\); their fields: body, id, text$"):
        check_text_field(_field_inputs(tmp_path, "most.jsonl", most_missing), "text")
    small_half = [{"text": "t"}] * 3 + [{"body": "b"}] * 7  # below FIELD_MIN_SAMPLE: only "none" is an error
    check_text_field(_field_inputs(tmp_path, "small.jsonl", small_half), "text")


def test_field_check_keeps_the_content_fallback_and_skips_bad_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"{not json\n[1, 2]\n" + _jsonl([{"content": "x"}] * 5))
    check_text_field(list_inputs([str(path)]), "text")  # "content" stands in for the default field
    with pytest.raises(FieldMissing, match="first 5 has field 'body'.*their fields: content$"):
        check_text_field(list_inputs([str(path)]), "body")


def test_a_parquet_input_without_the_column_is_an_error(tmp_path):
    pq.write_table(pa.table({"body": ["a"], "id": ["x"]}), tmp_path / "n.parquet")
    files = list_inputs([str(tmp_path / "n.parquet")])
    with pytest.raises(FieldMissing) as err:
        check_text_field(files, "text")
    assert str(err.value) == "n.parquet: no column 'text' (--text-field); its columns: body, id"
    check_text_field(files, "body")


def test_a_wrong_id_field_is_only_a_warning(tmp_path, caplog):
    files = _field_inputs(tmp_path, "i.jsonl", [{"text": "t", "id": 1}] * 3)
    check_text_field(files, "text", "key")
    assert "no record among the first 3 has field 'key' (--id-field)" in caplog.text
