"""Corpus readers: stream documents as exact bytes with stable ids.

Inputs are `.jsonl`, `.jsonl.zst`, `.jsonl.gz` (one JSON object per line), `.txt` (the whole
file is one document) and `.parquet` (a string or binary text column), given as files,
directories (walked recursively) or glob patterns. Every record comes out either as a
`Document` (its bytes: the UTF-8 of a JSON text, a txt file byte for byte, a parquet cell) or
as a `Reject` saying where and why it could not be read: bad records are never dropped
silently and never stop the run. A corrupt or truncated compressed stream yields the
documents of the units before the damage, then rejects, and ends that file.

Compressed jsonl is decoded one checked unit at a time (a gzip member, a zstd frame; see
`bltdata.compressed`): the records of a unit are held until the unit has ended and passed its
checksum, so a flipped byte never lets a garbled line through; at a failed unit every held
record and the rest of the file become rejects. zstd frames written without a content
checksum (zstandard's Python default) have no proof to give: their records are released when
the frame decodes without error to its end, with a warning in the log.

Everything streams, so memory is bounded by the largest document plus one compressed unit's
held records (in memory up to `compressed.HOLD_MEMORY_BYTES`, then in a temporary file), not
by the file: plain jsonl is read line by line through a buffered reader, parquet batch by
batch within each row group.

`read_records` takes the raw (still compressed) binary stream, so a Beam pipeline can hand
it a file it opened without decompression; `read_input` opens a local path.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, Union

from bltdata import compressed, fs

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


def list_inputs(inputs: Sequence[str], *, exclude: Sequence[str] = ()) -> list[InputFile]:
    """Expand files, directories (recursive) and glob patterns into input files.

    A file's `source` is its path relative to its input root: the file's own name when it
    is given directly, the path under the directory for a directory, the path under the
    pattern's non-glob prefix for a glob; a name that is not valid UTF-8 appears with its
    undecodable bytes as `\\xNN` (`display_path`). Hidden entries (names starting with '.')
    are skipped in directory walks, as glob skips them. Symbolic links to directories are
    followed; a directory reached a second time (a link loop, or two links to one directory)
    is walked once, with a warning. Files with an unsupported suffix found in a directory or
    by a glob are skipped with a log line; one named explicitly, a path that does not exist
    (or a dangling link), a glob that matches nothing, a directory that cannot be listed and
    a directory without input files raise ValueError. Files inside the local directories
    `exclude` (the job's output) are left out; naming one of them, or a directory inside
    one, raises ValueError. The same file reached twice is listed once (first occurrence
    wins); two different files with the same source raise ValueError, since their ids would
    clash. The result is sorted by source.
    """
    excluded = _Excluded(exclude)
    found: dict[str, InputFile] = {}
    for spec in inputs:
        for input_file in _expand(str(spec), excluded):
            real = input_file.path if fs.is_remote(input_file.path) else os.path.realpath(input_file.path)
            if excluded.holds(real):
                log.info("skipping %s: inside the output directory", display_path(input_file.path))
                continue
            found.setdefault(real, input_file)
    files = sorted(found.values(), key=lambda f: f.source)
    for prev, cur in zip(files, files[1:]):
        if prev.source == cur.source:
            raise ValueError(
                f"inputs {display_path(prev.path)!r} and {display_path(cur.path)!r} have the same source name "
                f"{cur.source!r}; pass a common parent directory instead"
            )
    return files


def display_path(path: str | os.PathLike) -> str:
    """A path as text that is always valid UTF-8: bytes a file name holds that are not UTF-8
    (kept by Python as surrogate escapes) are written as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class _Excluded:
    """Local directories whose contents are not inputs (by real path and by device/inode)."""

    def __init__(self, directories: Sequence[str]):
        self.keys: set[tuple[int, int]] = set()
        self.roots: list[str] = []
        for directory in directories:
            if fs.is_remote(directory):
                continue
            try:
                st = os.stat(directory)
            except OSError:
                continue  # not created yet: nothing of it can be listed
            self.keys.add((st.st_dev, st.st_ino))
            self.roots.append(os.path.realpath(directory))

    def holds(self, real: str) -> bool:
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots)

    def refuse_inside(self, spec: str) -> None:
        if self.holds(os.path.realpath(spec)):
            raise ValueError(f"input {display_path(spec)!r} is inside the output directory; "
                             f"write the shards somewhere else")


def _expand(spec: str, excluded: _Excluded) -> list[InputFile]:
    if fs.is_remote(spec):
        return _expand_remote(spec)
    if _GLOB_MAGIC.search(spec):
        return _expand_glob(spec, excluded)
    path = Path(spec)
    if path.is_dir():
        excluded.refuse_inside(spec)
        files = _walk_dir(path, path, excluded)
        if not files:
            raise ValueError(f"directory {display_path(spec)!r} holds no input files ({_suffix_list()})")
        return files
    if path.is_file():
        excluded.refuse_inside(spec)
        fmt = detect_format(spec)
        if fmt is None:
            raise ValueError(f"input {display_path(spec)!r} has an unsupported suffix ({_suffix_list()})")
        return [InputFile(os.path.abspath(spec), display_path(path.name), fmt)]
    problem = _link_problem(spec)
    if problem:
        raise ValueError(f"input {display_path(spec)!r} is {problem}")
    if os.path.exists(spec):
        raise ValueError(f"input {display_path(spec)!r} is not a regular file or a directory")
    raise ValueError(f"input {display_path(spec)!r} does not exist")


def _link_problem(path: str) -> str | None:
    """'a dangling symbolic link to X' / 'a symbolic link loop', or None for a working path."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a dangling symbolic link to {display_path(os.readlink(path))!r}"
    return None
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


def _expand_glob(pattern: str, excluded: _Excluded) -> list[InputFile]:
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
        raise ValueError(f"glob {display_path(pattern)!r} matched nothing")
    files: list[InputFile] = []
    for match in matches:
        if os.path.isdir(match):
            files.extend(_walk_dir(Path(match), root, excluded))
        else:
            files.extend(_maybe_input(Path(match), root))
    if not files:
        raise ValueError(f"glob {display_path(pattern)!r} matched no input files ({_suffix_list()})")
    return files


def _walk_dir(directory: Path, root: Path, excluded: _Excluded) -> list[InputFile]:
    """Input files under `directory`, following links to directories, each directory once."""
    files: list[InputFile] = []
    seen: dict[tuple[int, int], str] = {}
    pending = [directory]
    while pending:
        current = pending.pop()
        info = os.stat(current)
        key = (info.st_dev, info.st_ino)
        if key in excluded.keys:
            log.info("skipping %s: the output directory", display_path(current))
            continue
        if key in seen:
            log.warning("skipping %s: the directory %s, already walked (a symbolic link loop or a second link)",
                        display_path(current), display_path(seen[key]))
            continue
        seen[key] = str(current)
        try:
            entries = sorted((e for e in os.scandir(current) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            raise ValueError(f"cannot list directory {display_path(current)!r}: {exc.strerror or exc}") from None
        subdirs = []
        for entry in entries:
            if _is_dir(entry):
                subdirs.append(Path(entry.path))
            else:  # files, and links that lead nowhere: those become rejects naming the link
                files.extend(_maybe_input(Path(entry.path), root))
        pending.extend(reversed(subdirs))  # depth first, in name order: the first link to a directory wins
    return files


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # a link loop: not a directory; read as a file, it becomes a reject
        return False


def _maybe_input(path: Path, root: Path) -> list[InputFile]:
    fmt = detect_format(path.name)
    if fmt is None:
        log.info("skipping %s: unsupported suffix", display_path(path))
        return []
    source = display_path(os.path.relpath(path, root).replace(os.sep, "/"))
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
    try:
        if f.format == "parquet" and not fs.is_remote(f.path):  # a path: pyarrow's native (faster) reader
            check_local(f.path)
            yield from _read_parquet(f.path, f.source, **kw)
            return
        fileobj = _open_bytes(f.path)
    except UnreadableInput as exc:
        yield Reject(f.source, 0, str(exc))
        return
    except OSError as exc:
        yield Reject(f.source, 0, f"cannot open {display_path(f.path)}: {exc.strerror or exc}")
        return
    with fileobj:
        yield from read_records(fileobj, f.source, f.format, **kw)


def _open_bytes(path: str) -> BinaryIO:
    """An input's bytes: through Beam's filesystems when remote, else `open_local`."""
    return fs.open_read(path) if fs.is_remote(path) else open_local(path)


class UnreadableInput(OSError):
    """A local input that cannot be opened; the message names it and says why."""


def check_local(path: str) -> None:
    """Raise `UnreadableInput` unless `path` is a regular file (a FIFO would block a reader)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnreadableInput(f"cannot open {display_path(path)}: {_link_problem(path) or exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableInput(f"cannot open {display_path(path)}: not a regular file")


def open_local(path: str, buffering: int = -1) -> BinaryIO:
    """Open a local input for reading, or raise `UnreadableInput` naming it."""
    check_local(path)
    try:
        return open(path, "rb", buffering=buffering)
    except OSError as exc:
        raise UnreadableInput(f"cannot open {display_path(path)}: {exc.strerror or exc}") from None


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
    if fmt in _UNIT_DECODERS:
        yield from _read_compressed_jsonl(fileobj, source, fmt, **fields)
        return
    stream = fileobj
    if isinstance(fileobj, io.RawIOBase) or not hasattr(fileobj, "readline"):
        stream = io.BufferedReader(_RawAdapter(fileobj), _READ_CHUNK)
    lineno = 0
    try:
        for line in iter(stream.readline, b""):
            lineno += 1
            record = _parse_line(line, source, lineno, **fields)
            if record is not None:
                yield record
    except OSError as exc:
        yield Reject(source, lineno + 1, f"read error after line {lineno}: {exc.strerror or exc}")
    finally:
        if stream is not fileobj:
            stream.close()


_UNIT_DECODERS = {"jsonl.gz": compressed.gzip_units, "jsonl.zst": compressed.zstd_units}


def _read_compressed_jsonl(fileobj: BinaryIO, source: str, fmt: str, **fields) -> Iterator[Record]:
    """jsonl inside gzip members / zstd frames: a line's record is held until every unit its
    bytes came from has ended cleanly (and passed its checksum, where it has one).

    At a failed unit, each held record becomes a `Reject` saying so, then one more `Reject`
    (at the line after the last one read) stands for the rest of the file, which is not read:
    the records in a file's shards are exactly its lines before the first failed unit.
    """
    held = compressed.HeldRecords()
    lines = _LineSplitter(source, fields)
    unverified = 0
    try:
        for event in _UNIT_DECODERS[fmt](fileobj):
            if isinstance(event, compressed.UnitEnd):
                unverified += not event.verified
                yield from held.drain()
            else:
                for record in lines.feed(event):
                    held.add(record, len(record.data) if isinstance(record, Document) else 0)
    except compressed.UnitError as exc:
        yield from _reject_held(held, source, exc)
        yield Reject(source, lines.lineno + 1, _unit_error_reason(fmt, exc, lines.lineno))
        return
    finally:
        held.close()
    yield from lines.finish()
    if unverified:
        log.warning("%s: %d zstd frame(s) without a content checksum: corruption inside them is only "
                    "caught where the decoder itself fails", source, unverified)


def _reject_held(held: compressed.HeldRecords, source: str, exc: compressed.UnitError) -> Iterator[Reject]:
    reason = f"line decoded from {exc.unit}, which failed ({exc.kind}: {exc.detail}); not proven intact"
    for record in held.drain():
        yield Reject(source, record.position, reason)


def _unit_error_reason(fmt: str, exc: compressed.UnitError, lineno: int) -> str:
    kind = {"jsonl.zst": "zstd", "jsonl.gz": "gzip"}[fmt]
    what = {"truncated": f"truncated {kind} stream", "corrupt": f"corrupt {kind} stream"}.get(exc.kind, exc.kind)
    return (f"{what} after line {lineno}: {exc.unit} (from compressed byte {exc.offset}): {exc.detail}; "
            f"nothing from that {exc.unit.split()[1]} on is in the shards")


class _LineSplitter:
    """Cuts decoded chunks into lines and parses each; a line may span chunks and units."""

    def __init__(self, source: str, fields: dict):
        self.source, self.fields = source, fields
        self.partial = bytearray()
        self.lineno = 0

    def feed(self, chunk: bytes) -> list[Record]:
        pieces = chunk.split(b"\n")
        if self.partial:
            self.partial += pieces[0]
            pieces[0] = bytes(self.partial)
            self.partial = bytearray()
        self.partial += pieces.pop()
        first, self.lineno = self.lineno + 1, self.lineno + len(pieces)
        parsed = (_parse_line(line, self.source, n, **self.fields) for n, line in enumerate(pieces, first))
        return [record for record in parsed if record is not None]

    def finish(self) -> list[Record]:
        """The last line, when the stream does not end with a newline."""
        if not self.partial:
            return []
        self.partial += b"\n"
        return self.feed(b"")


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
        msg = exc.msg.removesuffix(" at")  # "Invalid control character at", "Unterminated string starting at"
        return Reject(source, lineno, f"malformed JSON: {msg} at col {exc.colno}")
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long, nesting too deep
        return Reject(source, lineno, f"malformed JSON: {type(exc).__name__}: {exc}")
    if not isinstance(obj, dict):
        return Reject(source, lineno, f"JSON value is {_kind(obj)}, not an object")
    try:
        return Document(_doc_id(obj.get(id_field), source, lineno, id_field), source, lineno,
                        _json_text(obj, text_field))
    except _BadRecord as exc:
        return Reject(source, lineno, str(exc))


def _text_field_in(names, text_field: str) -> str | None:
    """The field of `names` (a record's keys, a file's columns) that holds the text: `text_field`,
    or for the default field its fallback (`content`) when only that is there; None when neither."""
    if text_field in names:
        return text_field
    if text_field == DEFAULT_TEXT_FIELD and FALLBACK_TEXT_FIELD in names:
        return FALLBACK_TEXT_FIELD
    return None


def _json_text(obj: dict, text_field: str) -> bytes:
    field = _text_field_in(obj, text_field)
    if field is None:
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
    column = _text_field_in(names, text_field)
    if column is None:
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


# ----------------------------------------------------------------------------- field check

FIELD_SAMPLE_RECORDS = 100  # JSON records read from the start of each checked file
FIELD_SAMPLE_FILES = 8  # jsonl/parquet files checked, the first in input order
FIELD_SAMPLE_BYTES = 16 << 20  # at most this much decoded text read per checked file
FIELD_MIN_SAMPLE = 20  # below this many sampled records, only "none has the field" is an error


class FieldMissing(ValueError):
    """The text field a job asks for is absent from (most of) an input's first records."""


def check_text_field(files: Sequence[InputFile], text_field: str = DEFAULT_TEXT_FIELD,
                     id_field: str = DEFAULT_ID_FIELD) -> None:
    """Raise `FieldMissing` when a wrong `--text-field` would turn an input into rejects.

    The first `FIELD_SAMPLE_FILES` jsonl(.gz/.zst) and parquet inputs are sampled: a parquet
    file without the column, or a jsonl file where more than half of its first
    `FIELD_SAMPLE_RECORDS` JSON objects lack the field (when at least `FIELD_MIN_SAMPLE` were
    read; with fewer, when none has it) is an error naming the file, the field and the fields
    its records do have. Occasional records without the field stay rejects, as in the run.
    Malformed lines and unreadable files are left to the run, which rejects them with a reason.
    A non-default `id_field` that no sampled record has is only a warning: ids then fall back
    to the position, as documented for records without an id.
    """
    checked = [f for f in files if f.format != "txt"][:FIELD_SAMPLE_FILES]
    for f in checked:
        try:
            sample = _sample_fields(f)
        except (OSError, ValueError, compressed.UnitError) as exc:  # the run rejects it with the reason
            log.debug("field check skipped %s: %s", f.source, exc)
            continue
        if f.format == "parquet":
            _check_parquet_columns(f, sample, text_field, id_field)
        else:
            _check_json_fields(f, sample, text_field, id_field)


def _field_list(counts: dict[str, int], limit: int = 12) -> str:
    names = sorted(counts, key=lambda name: -counts[name])  # most common first, then first seen
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def _check_parquet_columns(f: InputFile, columns: list[str], text_field: str, id_field: str) -> None:
    if _text_field_in(columns, text_field) is None:
        raise FieldMissing(f"{f.source}: no column {text_field!r} (--text-field); its columns: "
                           f"{_field_list(dict.fromkeys(columns, 1))}")
    if id_field != DEFAULT_ID_FIELD and id_field not in columns:
        log.warning("%s: no column %r (--id-field); ids will be the row positions", f.source, id_field)


def _check_json_fields(f: InputFile, records: list[dict], text_field: str, id_field: str) -> None:
    if not records:
        return
    counts: dict[str, int] = {}
    for record in records:
        for name in record:
            counts[name] = counts.get(name, 0) + 1
    missing = sum(_text_field_in(record, text_field) is None for record in records)
    n = len(records)
    if missing == n:
        raise FieldMissing(f"{f.source}: no record among the first {n} has field {text_field!r} (--text-field); "
                           f"their fields: {_field_list(counts)}")
    if n >= FIELD_MIN_SAMPLE and 2 * missing > n:
        raise FieldMissing(f"{f.source}: {missing} of the first {n} records have no field {text_field!r} "
                           f"(--text-field); their fields: {_field_list(counts)}")
    if id_field != DEFAULT_ID_FIELD and id_field not in counts:
        log.warning("%s: no record among the first %d has field %r (--id-field); ids will be the line numbers",
                    f.source, n, id_field)


def _sample_fields(f: InputFile):
    """Parquet: the column names. jsonl: the JSON objects of the first lines (others skipped)."""
    if f.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with _open_bytes(f.path) as fileobj:
                return pq.ParquetFile(fileobj).schema_arrow.names
        except pa.ArrowException as exc:
            raise ValueError(str(exc)) from None
    records = []
    with _open_bytes(f.path) as fileobj:
        for line in _first_lines(fileobj, f.format):
            try:
                obj = json.loads(line.decode("utf-8-sig"))
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                records.append(obj)
                if len(records) == FIELD_SAMPLE_RECORDS:
                    break
    return records


def _first_lines(fileobj: BinaryIO, fmt: str) -> Iterator[bytes]:
    """Complete lines from the start of a (possibly compressed) jsonl stream, up to FIELD_SAMPLE_BYTES."""
    if fmt in _UNIT_DECODERS:
        chunks = (event for event in _UNIT_DECODERS[fmt](fileobj) if isinstance(event, bytes))
    else:
        chunks = iter(lambda: fileobj.read(_READ_CHUNK), b"")
    buffer, seen = bytearray(), 0
    for chunk in chunks:
        seen += len(chunk)
        buffer += chunk
        end = buffer.rfind(b"\n")
        if end >= 0:
            lines = bytes(buffer[:end]).split(b"\n")
            del buffer[:end + 1]
            yield from (line for line in lines if line.strip())
        if seen >= FIELD_SAMPLE_BYTES:
            return
    if buffer.strip():
        yield bytes(buffer)
