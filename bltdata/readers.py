"""Corpus readers: stream documents as exact bytes with stable ids.

Inputs are `.jsonl`, `.jsonl.zst`, `.jsonl.gz` (one JSON object per line), `.txt` (the whole
file is one document) and `.parquet` (a string or binary text column), given as files,
directories (walked recursively) or glob patterns. Every record comes out either as a
`Document` (its bytes: the UTF-8 of a JSON text, a txt file byte for byte, a parquet cell) or
as a `Reject` saying where and why it could not be read: bad records are never dropped
silently and never stop the run. A corrupt or truncated compressed stream yields the
documents before the damage, then one `Reject`, and ends that file.

Everything streams, so memory is bounded by the largest document, not the file: jsonl is
read line by line through a buffered reader, gzip with the `gzip` module, parquet batch by
batch within each row group. zstd goes through `_ZstdReader`, which feeds zstandard's
`decompressobj` one block at a time rather than using `stream_reader`: that reader ends
silently when a stream is cut short and, at a corrupt block, drops what it had decoded in
the same read.

`read_records` takes the raw (still compressed) binary stream, so a Beam pipeline can hand
it a file it opened without decompression; `read_input` opens a local path.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, Union

import zstandard

from bltdata import fs

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "jsonl.zst", "jsonl.gz", "txt", "parquet")
# Longest suffix first: ".jsonl.zst" must win over a bare ".zst" rule, were there one.
_SUFFIXES = (
    (".jsonl.zst", "jsonl.zst"),
    (".jsonl.gz", "jsonl.gz"),
    (".jsonl", "jsonl"),
    (".txt", "txt"),
    (".parquet", "parquet"),
)
DEFAULT_TEXT_FIELD = "text"
FALLBACK_TEXT_FIELD = "content"  # used when the default field "text" is absent
DEFAULT_ID_FIELD = "id"
PARQUET_BATCH_ROWS = 256
_READ_CHUNK = 1 << 16
_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Document:
    """One document: its id, where it came from, and its exact bytes."""

    doc_id: str  # the record's own id field (str of it) if present, else f"{source}:{position}"
    source: str  # input file path relative to its input root, '/'-separated
    position: int  # jsonl: 1-based line number; parquet: 0-based row index; txt: 0
    data: bytes


@dataclass(frozen=True)
class Reject:
    """A record (or a whole file, position 0) that could not be read, and why."""

    source: str
    position: int
    reason: str

    def to_json(self) -> dict:
        return {"source": self.source, "position": self.position, "reason": self.reason}


@dataclass(frozen=True)
class InputFile:
    """A local input file, the name its documents carry (`source`) and its format."""

    path: str
    source: str
    format: str


Record = Union[Document, Reject]


class _BadRecord(Exception):
    """A record-level problem; turned into a `Reject` by the format reader."""


# ----------------------------------------------------------------------------- listing


def detect_format(path: str) -> str | None:
    """The format of a file from its suffix (case-insensitive), or None if unsupported."""
    name = os.path.basename(str(path)).lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def list_inputs(inputs: Sequence[str]) -> list[InputFile]:
    """Expand files, directories (recursive) and glob patterns into input files.

    A file's `source` is its path relative to its input root: the file's own name when it
    is given directly, the path under the directory for a directory, the path under the
    pattern's non-glob prefix for a glob. Hidden entries (names starting with '.') are
    skipped in directory walks, as glob skips them. Files with an unsupported suffix found
    in a directory or by a glob are skipped with a log line; one named explicitly, a path
    that does not exist, a glob that matches nothing and a directory without input files
    raise ValueError. The same file reached twice is listed once (first occurrence wins);
    two different files with the same source raise ValueError, since their ids would clash.
    The result is sorted by source.
    """
    found: dict[str, InputFile] = {}
    for spec in inputs:
        for input_file in _expand(str(spec)):
            found.setdefault(os.path.realpath(input_file.path), input_file)
    files = sorted(found.values(), key=lambda f: f.source)
    for prev, cur in zip(files, files[1:]):
        if prev.source == cur.source:
            raise ValueError(
                f"inputs {prev.path!r} and {cur.path!r} have the same source name "
                f"{cur.source!r}; pass a common parent directory instead"
            )
    return files


def _expand(spec: str) -> list[InputFile]:
    if fs.is_remote(spec):
        return _expand_remote(spec)
    if _GLOB_MAGIC.search(spec):
        return _expand_glob(spec)
    path = Path(spec)
    if path.is_dir():
        files = _walk_dir(path, path)
        if not files:
            raise ValueError(f"directory {spec!r} holds no input files ({_suffix_list()})")
        return files
    if path.is_file():
        fmt = detect_format(spec)
        if fmt is None:
            raise ValueError(f"input {spec!r} has an unsupported suffix ({_suffix_list()})")
        return [InputFile(os.path.abspath(spec), path.name, fmt)]
    raise ValueError(f"input {spec!r} does not exist")


def _expand_remote(spec: str) -> list[InputFile]:
    """gs://... (or any Beam filesystem): a file, a 'directory/' (recursive) or a glob."""
    if spec.endswith("/"):
        root = spec.rstrip("/")
    elif _GLOB_MAGIC.search(spec):
        root = spec[: _GLOB_MAGIC.search(spec).start()].rsplit("/", 1)[0]
    else:
        root = spec.rsplit("/", 1)[0]
    files = []
    for path, _ in fs.match(spec):
        fmt = detect_format(path)
        if fmt is None:
            log.info("skipping %s: unsupported suffix", path)
            continue
        files.append(InputFile(path, path[len(root) + 1:], fmt))
    if not files:
        raise ValueError(f"input {spec!r} matched no input files ({_suffix_list()})")
    return files


def _expand_glob(pattern: str) -> list[InputFile]:
    import glob

    parts = Path(pattern).parts
    prefix = []
    for part in parts:
        if _GLOB_MAGIC.search(part):
            break
        prefix.append(part)
    root = Path(*prefix) if prefix else Path(".")
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise ValueError(f"glob {pattern!r} matched nothing")
    files: list[InputFile] = []
    for match in matches:
        if os.path.isdir(match):
            files.extend(_walk_dir(Path(match), root))
        else:
            files.extend(_maybe_input(Path(match), root))
    if not files:
        raise ValueError(f"glob {pattern!r} matched no input files ({_suffix_list()})")
    return files


def _walk_dir(directory: Path, root: Path) -> list[InputFile]:
    files: list[InputFile] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                files.extend(_maybe_input(Path(dirpath) / name, root))
    return files


def _maybe_input(path: Path, root: Path) -> list[InputFile]:
    fmt = detect_format(path.name)
    if fmt is None:
        log.info("skipping %s: unsupported suffix", path)
        return []
    source = os.path.relpath(path, root).replace(os.sep, "/")
    return [InputFile(os.path.abspath(path), source, fmt)]


def _suffix_list() -> str:
    return ", ".join(suffix for suffix, _ in _SUFFIXES)


# ----------------------------------------------------------------------------- reading


def read_input(f: InputFile, **kw) -> Iterator[Record]:
    """Documents and rejects of a local input file (see `read_records` for the options)."""
    if f.format not in FORMATS:
        raise ValueError(f"unknown format {f.format!r} for {f.path!r}; expected one of {FORMATS}")
    return _read_input(f, **kw)


def _read_input(f: InputFile, **kw) -> Iterator[Record]:
    remote = fs.is_remote(f.path)
    if f.format == "parquet" and not remote:  # a path lets pyarrow use its native (faster) file reader
        yield from _read_parquet(f.path, f.source, **kw)
        return
    try:
        fileobj = fs.open_read(f.path) if remote else open(f.path, "rb")
    except OSError as exc:
        yield Reject(f.source, 0, f"cannot open {f.path}: {exc.strerror or exc}")
        return
    with fileobj:
        yield from read_records(fileobj, f.source, f.format, **kw)


def read_records(
    fileobj: BinaryIO,
    source: str,
    format: str,
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    id_field: str = DEFAULT_ID_FIELD,
) -> Iterator[Record]:
    """Stream the documents (and rejects) of one raw, possibly compressed, binary stream.

    jsonl: each line holds a JSON object; its `text_field` (or "content" when the default
    "text" is absent) must be a string and becomes the UTF-8 bytes of the document; lines
    holding only whitespace are skipped (not rejected, not counted), a UTF-8 BOM on the
    first line is ignored, lines may end with CRLF. txt: the whole file is one document.
    parquet: `fileobj` must be seekable; the text column may be string or binary.
    The id is the record's `id_field` when it is a string or an integer (an empty string
    or null counts as absent), else f"{source}:{position}"; any other id type is rejected.
    The caller keeps ownership of `fileobj` (it is not closed).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r} for {source!r}; expected one of {FORMATS}")
    fields = dict(text_field=text_field, id_field=id_field)
    if format == "txt":
        return _read_txt(fileobj, source)
    if format == "parquet":
        return _read_parquet(fileobj, source, **fields)
    return _read_jsonl(fileobj, source, format, **fields)


def _read_txt(fileobj: BinaryIO, source: str) -> Iterator[Record]:
    try:
        data = fileobj.read()
    except OSError as exc:
        yield Reject(source, 0, f"read error: {exc}")
        return
    yield Document(f"{source}:0", source, 0, bytes(data))


def _doc_id(value, source: str, position: int, id_field: str) -> str:
    if value is None or value == "":
        return f"{source}:{position}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadRecord(f"id field {id_field!r} is {_kind(value)}; expected a string or an integer")
    return str(value)


def _kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- jsonl


def _read_jsonl(fileobj: BinaryIO, source: str, fmt: str, **fields) -> Iterator[Record]:
    stream = _line_stream(fileobj, fmt)
    lineno = 0
    try:
        for line in iter(stream.readline, b""):
            lineno += 1
            record = _parse_line(line, source, lineno, **fields)
            if record is not None:
                yield record
    except (zstandard.ZstdError, EOFError, zlib.error, OSError) as exc:
        yield Reject(source, lineno + 1, _stream_error(fmt, exc, lineno))
    finally:
        if stream is not fileobj:
            stream.close()


def _line_stream(fileobj: BinaryIO, fmt: str) -> BinaryIO:
    """A buffered, decompressed view of `fileobj` with `readline`; closing it leaves
    `fileobj` open."""
    if fmt == "jsonl.zst":
        return io.BufferedReader(_ZstdReader(fileobj), _READ_CHUNK)
    if fmt == "jsonl.gz":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if isinstance(fileobj, io.RawIOBase) or not hasattr(fileobj, "readline"):
        return io.BufferedReader(_RawAdapter(fileobj), _READ_CHUNK)
    return fileobj


def _stream_error(fmt: str, exc: BaseException, lineno: int) -> str:
    kind = {"jsonl.zst": "zstd", "jsonl.gz": "gzip"}.get(fmt)
    if kind is None:
        return f"read error after line {lineno}: {exc}"
    if isinstance(exc, EOFError):
        return f"truncated {kind} stream after line {lineno}: {exc}"
    return f"corrupt {kind} stream after line {lineno}: {exc}"


def _parse_line(line: bytes, source: str, lineno: int, *, text_field: str, id_field: str) -> Record | None:
    if lineno == 1 and line.startswith(_UTF8_BOM):
        line = line[len(_UTF8_BOM):]
    if not line.strip():
        return None
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Reject(source, lineno, f"invalid UTF-8 at byte {exc.start}: {exc.reason}")
    except json.JSONDecodeError as exc:
        return Reject(source, lineno, f"malformed JSON: {exc.msg} at col {exc.colno}")
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long, nesting too deep
        return Reject(source, lineno, f"malformed JSON: {type(exc).__name__}: {exc}")
    if not isinstance(obj, dict):
        return Reject(source, lineno, f"JSON value is {_kind(obj)}, not an object")
    try:
        return Document(_doc_id(obj.get(id_field), source, lineno, id_field), source, lineno,
                        _json_text(obj, text_field))
    except _BadRecord as exc:
        return Reject(source, lineno, str(exc))


def _json_text(obj: dict, text_field: str) -> bytes:
    field = text_field
    if field not in obj and field == DEFAULT_TEXT_FIELD and FALLBACK_TEXT_FIELD in obj:
        field = FALLBACK_TEXT_FIELD
    if field not in obj:
        also = f" (nor {FALLBACK_TEXT_FIELD!r})" if text_field == DEFAULT_TEXT_FIELD else ""
        raise _BadRecord(f"missing text field {text_field!r}{also}")
    text = obj[field]
    if not isinstance(text, str):
        raise _BadRecord(f"text field {field!r} is {_kind(text)}, not a string")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _BadRecord(
            f"text field {field!r} has a lone surrogate at char {exc.start}; not encodable as UTF-8"
        ) from None


class _RawAdapter(io.RawIOBase):
    """Lets io.BufferedReader buffer any object with `read` without closing it."""

    def __init__(self, source):
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MAGIC_TAIL = b"\x2a\x4d\x18"  # skippable frames: 0x184D2A50..0x184D2A5F


class ZstdTruncatedError(EOFError):
    """The zstd stream ends inside a frame."""


class _ZstdReader(io.RawIOBase):
    """Decompresses a zstd stream (every frame of it) one block at a time.

    zstandard's `stream_reader` ends without an error when its input stops inside a frame,
    and when it meets a corrupt block it drops whatever it had decoded in the same read.
    This reader follows the frame layout (RFC 8878: frame header, 3-byte block headers,
    optional checksum) and feeds whole blocks to a `decompressobj`, so a cut stream raises
    `ZstdTruncatedError`, a corrupt block raises `zstandard.ZstdError`, and every block
    before either is delivered. Memory is bounded by one block (128 KiB of output).
    """

    def __init__(self, source):
        self._source = source
        self._input = bytearray()  # compressed bytes read but not yet fed
        self._output = memoryview(b"")  # decoded bytes not yet returned
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # decompressobj of the frame in progress
        self._checksum = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._output:
            unit = self._next_block()
            if unit is None:
                return 0
            self._output = memoryview(self._decode(unit))
        n = min(len(buffer), len(self._output))
        buffer[:n] = self._output[:n]
        self._output = self._output[n:]
        return n

    def _decode(self, unit: tuple[bytes, bool]) -> bytes:
        data, last = unit
        if not data:
            return b""
        out = self._frame.decompress(data)
        if last:
            self._frame = None
        return out

    def _next_block(self) -> tuple[bytes, bool] | None:
        """The compressed bytes of the next block (with the frame header before a first
        block, the checksum after a last one) and whether it ends its frame."""
        prefix = b""
        if self._frame is None:
            if not self._fill(1, at_boundary=True):
                return None
            prefix = self._frame_header()
            if not prefix:  # a skippable frame
                return b"", False
        header = self._take(3)
        value = int.from_bytes(header, "little")
        last, block_type, size = value & 1, value >> 1 & 3, value >> 3
        if block_type == 3:
            raise zstandard.ZstdError("corrupt block header (reserved block type)")
        content = self._take((1 if block_type == 1 else size) + (4 if last and self._checksum else 0))
        return prefix + header + content, bool(last)

    def _frame_header(self) -> bytes:
        magic = self._take(4)
        if magic[1:] == _SKIPPABLE_MAGIC_TAIL and magic[0] & 0xF0 == 0x50:
            self._discard(int.from_bytes(self._take(4), "little"))
            return b""
        if magic != _ZSTD_MAGIC:
            raise zstandard.ZstdError(f"not a zstd frame (magic bytes {magic.hex()})")
        descriptor = self._take(1)
        single_segment = descriptor[0] >> 5 & 1
        self._checksum = bool(descriptor[0] >> 2 & 1)
        content_size_bytes = (single_segment, 2, 4, 8)[descriptor[0] >> 6]
        dict_id_bytes = (0, 1, 2, 4)[descriptor[0] & 3]
        rest = self._take((1 - single_segment) + dict_id_bytes + content_size_bytes)
        self._frame = self._dctx.decompressobj()
        return magic + descriptor + rest

    def _fill(self, n: int, at_boundary: bool = False) -> bool:
        """Read until `n` input bytes are buffered; False at a clean end between frames."""
        while len(self._input) < n:
            chunk = self._source.read(max(_READ_CHUNK, n - len(self._input)))
            if not chunk:
                if at_boundary and not self._input:
                    return False
                raise ZstdTruncatedError("the stream ends inside a frame")
            self._input += chunk
        return True

    def _take(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self._input[:n])
        del self._input[:n]
        return out

    def _discard(self, n: int) -> None:
        while n:
            self._fill(1)
            step = min(n, len(self._input))
            del self._input[:step]
            n -= step


# ----------------------------------------------------------------------------- parquet


def _read_parquet(
    fileobj, source: str, *, text_field: str = DEFAULT_TEXT_FIELD, id_field: str = DEFAULT_ID_FIELD
) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = (pa.ArrowException, OSError, ValueError)
    try:
        pfile = pq.ParquetFile(fileobj)
        text_col = _parquet_text_column(pfile.schema_arrow, text_field)
    except _BadRecord as exc:
        yield Reject(source, 0, str(exc))
        return
    except errors as exc:
        yield Reject(source, 0, f"unreadable parquet: {exc}")
        return
    has_id = id_field in pfile.schema_arrow.names and id_field != text_col
    columns = [text_col, id_field] if has_id else [text_col]
    row = 0
    try:  # row group by row group: an error in one cannot take earlier rows with it
        for group in range(pfile.num_row_groups):
            batches = pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns)
            for batch in batches:
                texts = batch.column(0).cast(pa.large_binary()).to_pylist()
                ids = batch.column(1).to_pylist() if has_id else [None] * len(texts)
                for offset, (data, id_value) in enumerate(zip(texts, ids)):
                    yield _parquet_record(source, row + offset, data, id_value, text_col, id_field)
                row += len(texts)
    except errors as exc:
        yield Reject(source, row, f"unreadable parquet at row {row}: {exc}")


def _parquet_text_column(schema, text_field: str) -> str:
    import pyarrow as pa

    names = schema.names
    column = text_field
    if column not in names and column == DEFAULT_TEXT_FIELD and FALLBACK_TEXT_FIELD in names:
        column = FALLBACK_TEXT_FIELD
    if column not in names:
        raise _BadRecord(f"no text column {text_field!r} in parquet columns {names}")
    kind = schema.field(column).type
    ok = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(check(kind) for check in ok):
        raise _BadRecord(f"text column {column!r} has type {kind}; expected string or binary")
    return column


def _parquet_record(source: str, row: int, data, id_value, text_col: str, id_field: str) -> Record:
    if data is None:
        return Reject(source, row, f"text column {text_col!r} is null")
    try:
        return Document(_doc_id(id_value, source, row, id_field), source, row, data)
    except _BadRecord as exc:
        return Reject(source, row, str(exc))
