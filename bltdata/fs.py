"""Paths that may be local or remote (gs://, s3://, ...), for the pipeline's inputs and outputs.

Local paths use the operating system directly (fast, and renames are atomic). Anything with
a URL scheme goes through Apache Beam's `FileSystems`, so a job that reads `gs://` inputs and
writes a `gs://` output runs unchanged on Dataflow workers. Remote files are written under a
temporary name and renamed when complete, as local ones are; shards are first written to a
local temporary file and then uploaded, since Parquet writing wants a seekable local file.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_COPY_CHUNK = 8 << 20


def is_remote(path: str | os.PathLike) -> bool:
    return bool(_SCHEME.match(str(path))) and not str(path).startswith("file://")


def join(base: str | os.PathLike, *names: str) -> str:
    if is_remote(base):
        return posixpath.join(str(base), *names)
    return str(Path(base).joinpath(*names))


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(path)


def _beam():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def exists(path: str) -> bool:
    return _beam().exists(path) if is_remote(path) else os.path.exists(path)


def size(path: str) -> int:
    if is_remote(path):
        return _beam().match([path])[0].metadata_list[0].size_in_bytes
    return os.path.getsize(path)


def input_stat(path: str) -> dict | None:
    """What identifies a version of an input file: its size and modification time, or None
    when it cannot be stat'ed. Local: `mtime_ns` (follows links). Remote: Beam's FileSystems
    metadata (`last_updated`, seconds, where the filesystem gives one; Beam 2.77's metadata
    carries no content checksum, so none is recorded)."""
    if is_remote(path):
        try:
            (meta,) = _beam().match([path])[0].metadata_list
        except (OSError, ValueError):
            return None
        found = {"size": meta.size_in_bytes}
        if meta.last_updated_in_seconds:
            found["last_updated"] = meta.last_updated_in_seconds
        return found
    try:
        info = os.stat(path)
    except OSError:
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def makedirs(path: str) -> None:
    if not is_remote(path):  # object stores have no directories
        os.makedirs(path, exist_ok=True)


def open_read(path: str) -> BinaryIO:
    """A raw binary stream of the file (no decompression)."""
    if is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes

        return _beam().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


def read_text(path: str) -> str:
    with open_read(path) as f:
        return f.read().decode("utf-8")


def temporary_name(final: str, staging_dir: str | os.PathLike | None = None) -> str:
    """The hidden name a file is written under before it is renamed to `final`: beside
    `final`, or in `staging_dir` when given (so only finished files appear beside `final`)."""
    remote = is_remote(final)
    head, tail = posixpath.split(final) if remote else os.path.split(final)
    if staging_dir is not None:
        head = str(staging_dir)
    return (join if remote or is_remote(head) else os.path.join)(head, f".{tail}.tmp")


class AtomicWrite:
    """A file that appears under its final name complete or not at all.

    Write the local file `temporary`, then `commit()` publishes it to `final` (a local rename,
    or for a remote `final` an upload to `temporary_name(final, staging_dir)` and a remote
    rename); `discard()` removes it. As a context manager it yields `temporary` and commits
    on success; on any exception it discards and lets the exception propagate.
    """

    def __init__(self, final: str | os.PathLike, *, staging_dir: str | os.PathLike | None = None):
        self.final = str(final)
        self._remote_temporary = None
        if is_remote(self.final):  # written locally (Parquet wants a seekable file), uploaded on commit
            handle, self.temporary = tempfile.mkstemp(suffix=os.path.splitext(self.final)[1], prefix="bltdata-")
            os.close(handle)
            self._remote_temporary = temporary_name(self.final, staging_dir)
        else:
            self.temporary = temporary_name(self.final, staging_dir)
            if staging_dir is not None:
                os.makedirs(staging_dir, exist_ok=True)
                os.makedirs(os.path.dirname(self.final) or ".", exist_ok=True)

    def commit(self) -> None:
        try:
            publish(self.temporary, self.final, temporary=self._remote_temporary)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        Path(self.temporary).unlink(missing_ok=True)

    def __enter__(self) -> str:
        return self.temporary

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_bytes_atomic(path: str, data: bytes) -> None:
    with AtomicWrite(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj, *, indent: int = 2) -> None:
    """`obj` as sorted, indented JSON with a final newline, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 (hex) of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def publish(local_file: str, final: str, *, temporary: str | None = None) -> None:
    """Move a finished local file to `final` (local rename, or upload + remote rename).

    A remote upload goes to `temporary` (default: a hidden name beside `final`) and is then
    renamed to `final`. `AtomicWrite` is the usual way to call this.
    """
    if not is_remote(final):
        os.replace(local_file, final)
        return
    tmp = temporary or temporary_name(final)
    with open(local_file, "rb") as src, _beam().create(tmp) as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
    _replace_remote(tmp, final)
    os.remove(local_file)


def _replace_remote(tmp: str, final: str) -> None:
    fs = _beam()
    if fs.exists(final):
        fs.delete([final])
    fs.rename([tmp], [final])


def remove(path: str) -> None:
    if is_remote(path):
        if _beam().exists(path):
            _beam().delete([path])
    elif os.path.exists(path):
        os.remove(path)


def glob(directory: str, pattern: str) -> list[str]:
    """Files in `directory` (not recursive) whose name matches the glob `pattern`, sorted."""
    if is_remote(directory):
        matches = _beam().match([join(directory, pattern)])[0].metadata_list
        return sorted(m.path for m in matches if "/" not in m.path[len(directory.rstrip("/")) + 1:])
    return sorted(str(p) for p in Path(directory).glob(pattern))


def match(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of the remote files a pattern (or a single path, or a 'directory/') names."""
    spec = pattern.rstrip("/") + "/**" if pattern.endswith("/") else pattern
    return sorted((m.path, m.size_in_bytes) for m in _beam().match([spec])[0].metadata_list)
