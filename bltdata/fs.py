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


def temporary_name(final: str) -> str:
    """The hidden name a file is written under before it is renamed to `final`."""
    head, tail = (posixpath.split(final) if is_remote(final) else os.path.split(final))
    return (posixpath.join if is_remote(final) else os.path.join)(head, f".{tail}.tmp")


def write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = temporary_name(path)
    if is_remote(path):
        with _beam().create(tmp) as f:
            f.write(data)
        _replace_remote(tmp, path)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


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
    renamed to `final`.
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
