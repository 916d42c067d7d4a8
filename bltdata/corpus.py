"""The embedded default corpus (docs/design.md §9), built at run time from the running Python.

The quick start needs text without a download and the project ships no third-party text,
so the corpus is the interpreter's own standard library: the English documentation topics
of `pydoc_data.topics` (one document per topic, first) and the stdlib `.py` sources (one
document per file, sorted by relative path). Left out: `site-packages`/`dist-packages`,
test suites (`test`, `tests`, `idle_test` directories), build-specific files
(`config-*` directories, `_sysconfigdata_*.py`, which hold this machine's paths) and
`pydoc_data/topics.py` itself (its topics are already in). The order is deterministic for a
given Python version, so a corpus built twice is identical.
"""
from __future__ import annotations

import filecmp
import json
import logging
import os
import sysconfig
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

CORPUS_FILE_NAME = "default_corpus.jsonl"
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_EXCLUDED_FILES = {"pydoc_data/topics.py"}


def default_corpus_files(max_bytes: int | None = None) -> list[tuple[str, bytes]]:
    """(source name, bytes) of the default corpus: topics first, then the `.py` files.

    Names are `pydoc_topics/<topic>` and `stdlib/<relative path>`. Files that are not
    valid UTF-8 are skipped (logged), so every item can be written as JSON text. With
    `max_bytes`, the list is the shortest prefix whose total reaches `max_bytes` (the last
    item may overshoot it), or the whole corpus if it is smaller.
    """
    items: list[tuple[str, bytes]] = []
    total = 0
    for name, data in _iter_corpus():
        if max_bytes is not None and total >= max_bytes:
            break
        items.append((name, data))
        total += len(data)
    return items


def write_default_corpus(out_dir: str | os.PathLike, max_bytes: int | None = None) -> Path:
    """Write the default corpus as `default_corpus.jsonl` (`{"id", "text"}` per line).

    The file is written under a temporary name and renamed, so it never appears half
    written. An existing file with the same bytes is left as it is (same mtime), so a job
    that patched it sees an unchanged input. Returns its path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CORPUS_FILE_NAME
    tmp = out / f".{CORPUS_FILE_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for name, data in default_corpus_files(max_bytes):
            record = {"id": name, "text": data.decode("utf-8")}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
        tmp.unlink()
    else:
        os.replace(tmp, path)
    return path


def _iter_corpus() -> Iterator[tuple[str, bytes]]:
    yield from _iter_topics()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for rel in _stdlib_sources(stdlib):
        data = (stdlib / rel).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.info("default corpus: skipping %s (not UTF-8: %s)", rel, exc.reason)
            continue
        yield f"stdlib/{rel}", data


def _iter_topics() -> Iterator[tuple[str, bytes]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        log.warning("default corpus: pydoc_data.topics is missing; using .py sources only")
        return
    for name in sorted(topics):
        yield f"pydoc_topics/{name}", topics[name].encode("utf-8")


def _stdlib_sources(stdlib: Path) -> list[str]:
    """Relative '/'-separated paths of the stdlib `.py` files in the corpus, sorted."""
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS and not d.startswith("config-")]
        for name in filenames:
            rel = Path(dirpath, name).relative_to(stdlib).as_posix()
            if name.endswith(".py") and not name.startswith("_sysconfigdata_") and rel not in _EXCLUDED_FILES:
                paths.append(rel)
    return sorted(paths)
