"""The state of one patching job in its output directory: naming, completion records, resume.

A job groups its input files into *packs* (`plan_packs`: small files together, in input
order, up to `shard_bytes` of file size; a large file alone) and turns each pack into one or
more shards named after it, so the shard a document lands in depends only on the pack it came
from and its position there — never on the number of workers, the runner or the batch size.
When every shard of a pack is in place, a small *completion record* is written under
`OUT/.bltdata/done/`; a re-run skips the packs whose record exists (and matches the job's
parameters, the packing plan's fingerprint included), which is how a killed run is finished.
A record counts only while the pack's shards and its rejects file are in place (`read_done`).
The manifest is built last, from the completion records of all packs.

Layout of an output directory:
    OUT/data/<pack-key>-00000.parquet  shards, and nothing else: a Parquet dataset directory
                                       (pack-key: its first input's source, made file-safe)
    OUT/rejected/<pack-key>.jsonl      records that could not be read, with their reasons
    OUT/.bltdata/job.json              the job's parameters (a re-run must match them)
    OUT/.bltdata/done/<pack-key>.json  completion records
    OUT/.bltdata/staging/              shards being written (renamed into data/ when complete)
    OUT/.bltdata/progress/...          live counters for the progress display
    OUT/manifest.json                  written last

A job begun before `data/` existed (its job.json has no `data_dir`) is resumed as it was
written, with the shards directly in OUT (`written_before_data_dir`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from bltdata import fs, shards

STATE_DIR = shards.STATE_DIR
DONE_DIR = "done"
PROGRESS_DIR = "progress"
JOB_FILE = "job.json"


class JobMismatch(ValueError):
    """The output directory holds a job run with other parameters."""


class OutputError(ValueError):
    """The output directory cannot be created or written."""


class StaleInputs(ValueError):
    """Inputs changed after their shards were written."""


def file_key(source: str) -> str:
    """A file-safe, unique name for an input source (readable prefix + short hash)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source.replace("/", "__")).strip("._") or "input"
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:80]}-{digest}"


@dataclass(frozen=True)
class Pack:
    """The unit of work and of completion: consecutive input files written into one shard run.

    Small files are packed together (in input order, up to `shard_bytes` of file size) so
    that a million small files do not make a million shards; a file of `shard_bytes` or more
    is a pack of its own (and may roll over into several shards). A one-file pack keeps the
    file's own key, so its shards are named after it.
    """

    key: str
    files: tuple  # readers.InputFile, in input order

    @property
    def sources(self) -> list[str]:
        return [f.source for f in self.files]

    @property
    def label(self) -> str:
        """Its inputs for a message: the first three sources, then ' ...' if there are more."""
        return ", ".join(self.sources[:3]) + (" ..." if len(self.files) > 3 else "")


def pack_key(sources: list[str]) -> str:
    if len(sources) == 1:
        return file_key(sources[0])
    digest = hashlib.sha1("\n".join(sources).encode("utf-8")).hexdigest()[:8]
    return f"{file_key(sources[0])}-pack{len(sources)}-{digest}"


def plan_packs(files: list, sizes: list[int], shard_bytes: int) -> list[Pack]:
    """Group `files` (in their order) into packs of at most `shard_bytes` of file size."""
    packs, current, fill = [], [], 0

    def close():
        if current:
            packs.append(Pack(pack_key([f.source for f in current]), tuple(current)))

    for f, size in zip(files, sizes):
        if size >= shard_bytes or (current and fill + size > shard_bytes):
            close()
            current, fill = [], 0
        current.append(f)
        fill += size
        if size >= shard_bytes:
            close()
            current, fill = [], 0
    close()
    return packs


def one_pack_per_file(files: list) -> list[Pack]:
    """The plan of output directories written before packing: every file its own pack."""
    return [Pack(pack_key([f.source]), (f,)) for f in files]


def input_size(path: str) -> int:
    """The size of an input file, 0 for one that cannot be stat'ed (it becomes a reject)."""
    try:
        return fs.size(path)
    except OSError:
        return 0


def pack_stat(pack: Pack, stats: dict | None = None):
    """What a completion record keeps of its inputs: one file's stat, or {source: stat} for a pack.

    `stats` ({source: stat}) are the stats taken already; by default they are taken now.
    """
    stats = stats if stats is not None else {f.source: fs.input_stat(f.path) for f in pack.files}
    return stats[pack.files[0].source] if len(pack.files) == 1 else stats


def written_before_packing(out_dir: str | os.PathLike) -> bool:
    """Whether `out_dir` holds a job whose parameters predate packing (resumed one file a pack)."""
    job = fs.join(state_dir(out_dir), JOB_FILE)
    return fs.exists(job) and "packing" not in json.loads(fs.read_text(job))


def written_before_data_dir(out_dir: str | os.PathLike) -> bool:
    """Whether `out_dir` holds a job begun before shards went to `data/` (resumed with the shards in OUT)."""
    job = fs.join(state_dir(out_dir), JOB_FILE)
    return fs.exists(job) and "data_dir" not in json.loads(fs.read_text(job))


def data_dir_of(params: dict) -> str:
    """The shards' directory, relative to OUT, of a job with these parameters ("": OUT itself)."""
    return params.get("data_dir", "")


def shard_dir(out_dir: str | os.PathLike, data_dir: str) -> str:
    """Where a job's shards go: OUT/data, or OUT in a job begun before `data/`."""
    return fs.join(out_dir, data_dir) if data_dir else str(out_dir)


def packing_digest(packs: list[Pack]) -> str:
    """A fingerprint of the packing plan: a re-run that would pack differently is refused."""
    return hashlib.sha256(json.dumps([p.sources for p in packs]).encode("utf-8")).hexdigest()[:16]


def shard_name(key: str, index: int) -> str:
    return f"{key}-{index:05d}{shards.SHARD_SUFFIX}"


@dataclass
class FileRecord:
    """What one input file became: its shards and its rejected-record count."""

    source: str
    key: str
    shards: list[shards.ShardInfo] = field(default_factory=list)
    rejected: int = 0
    documents: int = 0
    input: dict | None = None  # fs.input_stat of the input when it was read (None: not known)

    def to_dict(self) -> dict:
        return {"source": self.source, "key": self.key, "rejected": self.rejected, "documents": self.documents,
                "shards": [s.to_dict() for s in self.shards], "input": self.input}

    @classmethod
    def from_dict(cls, d: dict) -> "FileRecord":
        return cls(source=d["source"], key=d["key"], rejected=d["rejected"], documents=d["documents"],
                   shards=[shards.ShardInfo.from_dict(s) for s in d["shards"]], input=d.get("input"))


def state_dir(out_dir: str | os.PathLike) -> str:
    return fs.join(out_dir, STATE_DIR)


def done_path(out_dir: str | os.PathLike, key: str) -> str:
    return fs.join(state_dir(out_dir), DONE_DIR, f"{key}.json")


def write_done(out_dir: str | os.PathLike, record: FileRecord) -> None:
    fs.makedirs(fs.join(state_dir(out_dir), DONE_DIR))
    fs.write_text_atomic(done_path(out_dir, record.key), json.dumps(record.to_dict(), sort_keys=True))


def read_done(out_dir: str | os.PathLike, key: str, *, data_dir: str) -> FileRecord | None:
    """The completion record of a pack, if all it made is still in place: else None (redo it).

    "All it made" is its shards (in `data_dir`, at their recorded sizes) and its rejects:
    `rejected/<key>.jsonl` with `record.rejected` lines, or no such file when it had none.
    The pipeline writes the rejects and the record on two branches with no order between
    them, so a run killed between the two leaves a record whose rejects are missing (or
    stale); this check is what makes such a pack be redone.
    """
    path = done_path(out_dir, key)
    if not fs.exists(path):
        return None
    record = FileRecord.from_dict(json.loads(fs.read_text(path)))
    for info in record.shards:
        shard = fs.join(shard_dir(out_dir, data_dir), info.file)
        if not fs.exists(shard) or shards.shard_size_problem(info, fs.size(shard)):
            return None
    return record if _rejects_in_place(out_dir, record) else None


def _rejects_in_place(out_dir: str | os.PathLike, record: FileRecord) -> bool:
    path = shards.rejects_path(out_dir, record.key)
    if not fs.exists(path):
        return record.rejected == 0
    return fs.read_text(path).count("\n") == record.rejected  # one JSON line each; JSON escapes newlines


def changed_inputs(out_dir: str | os.PathLike, done: list[tuple[FileRecord, dict | None]]) -> None:
    """Refuse to reuse the shards of inputs that changed since they were read.

    `done` pairs each completion record with the input's stat now. A record written before
    inputs were recorded (`input` None) is trusted. The error names every changed input and
    says how to proceed: the shards of one file depend on that file alone, so deleting its
    completion record redoes exactly that file (its old shards are replaced).
    """
    stale = [(record, now) for record, now in done if record.input is not None and record.input != now]
    if not stale:
        return
    lines = [f"  {record.source}: {_describe_change(record.input, now)}; its record: {done_path(out_dir, record.key)}"
             for record, now in stale]
    raise StaleInputs(f"{len(stale)} input(s) changed since their shards were written to {out_dir}:\n"
                      + "\n".join(lines) + "\nUse a new output directory, or delete the completion records "
                      "listed above and re-run to redo just those inputs.")


def _describe_change(before: dict, now: dict | None) -> str:
    if now is None:
        return "now missing or unreadable"
    keys = sorted(set(before) | set(now), key=lambda k: (k != "size", k))  # size first
    changed = [f"{k} {before.get(k)} -> {now.get(k)}" for k in keys if before.get(k) != now.get(k)]
    return ", ".join(changed)


def prepare_output(out_dir: str | os.PathLike, params: dict) -> None:
    """Create the output directory, or check that an existing one was made with `params`.

    Resuming with other parameters would mix two kinds of shards in one directory, so it is
    refused; the error says which parameters differ. A directory that cannot be created or
    written (a path under a regular file, a read-only or pseudo filesystem) raises
    `OutputError` saying so.
    """
    try:
        _prepare_output(out_dir, params)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out_dir) else ""
        raise OutputError(f"cannot use {out_dir} as the output directory: {exc.strerror or exc}{where}") from None


def _prepare_output(out_dir: str | os.PathLike, params: dict) -> None:
    fs.makedirs(str(out_dir))
    job = fs.join(state_dir(out_dir), JOB_FILE)
    if fs.exists(job):
        previous = json.loads(fs.read_text(job))
        if previous != params:
            changed = sorted(k for k in set(previous) | set(params) if previous.get(k) != params.get(k))
            raise JobMismatch(f"{out_dir} holds a job with other parameters ({', '.join(changed)}); "
                              f"use another output directory or delete it")
    else:
        fs.makedirs(fs.join(state_dir(out_dir), DONE_DIR))
        fs.write_text_atomic(job, json.dumps(params, sort_keys=True, indent=1))
    fs.makedirs(shard_dir(out_dir, data_dir_of(params)))
    fs.makedirs(shards.staging_path(out_dir))
    if not fs.is_remote(out_dir):
        for stale in Path(state_dir(out_dir), PROGRESS_DIR).glob("*.json"):
            stale.unlink()
        probe = Path(state_dir(out_dir), ".write-probe")  # a re-run writes nothing before the workers do
        probe.write_bytes(b"")
        probe.unlink()


def finish(out_dir: str | os.PathLike, packs: list[Pack], params: dict, *, patcher: dict,
           entropy_model: dict | None) -> shards.Manifest:
    """Write the manifest from the completion records of every pack of inputs; remove leftovers.

    Raises if a pack has no completion record (its shards are not all written).
    """
    data_dir = data_dir_of(params)
    records = []
    for pack in packs:
        record = read_done(out_dir, pack.key, data_dir=data_dir)
        if record is None:
            raise RuntimeError(f"{pack.label}: no completion record in {out_dir}; the input was not fully processed")
        records.append(record)
    for where in dict.fromkeys([str(out_dir), shard_dir(out_dir, data_dir), shards.staging_path(out_dir)]):
        for tmp in fs.glob(where, ".*.tmp"):  # left by killed attempts (older versions wrote them beside)
            fs.remove(tmp)
    all_shards = [s for r in records for s in r.shards]
    rejected = sum(r.rejected for r in records)
    return shards.write_manifest(out_dir, params, all_shards, rejected, data_dir=data_dir, patcher=patcher,
                                 entropy_model=entropy_model)


# ----------------------------------------------------------------------------- progress


class ProgressFile:
    """Counters of one pack's finished work, rewritten at most every `interval` seconds.

    The shard writer keeps them: `documents`/`bytes` handed to the shard writer and
    `raw_bytes`, the input bytes read through the last batch written, which reaches the
    pack's size only once its shards are closed and its completion record is written. The
    Beam workers may be other processes; the command line polls these files to draw its
    progress. They are advisory: nothing else reads them.
    """

    def __init__(self, out_dir: str | os.PathLike, key: str, interval: float = 1.0):
        self.enabled = not fs.is_remote(out_dir)  # only a local run draws progress from files
        self.path = Path(state_dir(out_dir), PROGRESS_DIR, f"{key}.json")
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.counts = {"documents": 0, "bytes": 0, "raw_bytes": 0}
        self._last = 0.0

    def add(self, *, documents: int, bytes_: int) -> None:
        self.counts["documents"] += documents
        self.counts["bytes"] += bytes_

    def update(self, *, raw_bytes: int, force: bool = False) -> None:
        """Record `raw_bytes` finished; write the file if `interval` has passed (or `force`)."""
        self.counts["raw_bytes"] = max(self.counts["raw_bytes"], raw_bytes)
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= self.interval):
            self._last = now
            fs.write_text_atomic(str(self.path), json.dumps(self.counts))


def read_progress(out_dir: str | os.PathLike) -> dict:
    """Sum of all progress files: documents, bytes and raw_bytes (input bytes) written to shards."""
    totals = {"documents": 0, "bytes": 0, "raw_bytes": 0}
    for f in Path(state_dir(out_dir), PROGRESS_DIR).glob("*.json"):
        try:
            counts = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced right now; the next poll reads it
        for k in totals:
            totals[k] += counts.get(k, 0)
    return totals
