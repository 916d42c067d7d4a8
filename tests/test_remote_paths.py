"""Remote inputs and outputs go through Beam's FileSystems (as gs:// would on Dataflow).

A test filesystem registered under the scheme `bltdatatest://` stores its objects in a local
directory, so the pipeline's remote code paths (listing, opening, uploads, renames, the
manifest) run for real, offline.
"""
import gzip
import json
import os

import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

from bltdata import fs, readers, shards
from bltdata.patch_job import PatchJob
from bltdata.pipelines import patch as pipeline

SCHEME = "bltdatatest"
ROOT: list[str] = []  # the local directory behind the scheme, set by the fixture


class DirectoryBackedFileSystem(LocalFileSystem):
    """`bltdatatest://x/y` ↔ `<ROOT>/x/y`; object-store semantics are what the pipeline assumes."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def _local(self, path):
        assert path.startswith(f"{SCHEME}://"), path
        return os.path.join(ROOT[0], path[len(SCHEME) + 3:])

    def _url(self, local):
        return f"{SCHEME}://" + os.path.relpath(local, ROOT[0])

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def _list(self, dir_or_prefix):
        for dirpath, _, names in os.walk(self._local(dir_or_prefix)):
            for name in names:
                yield self.metadata(self._url(os.path.join(dirpath, name)))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, *args, **kw):
        os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        return super().create(self._local(path), *args, **kw)

    def open(self, path, *args, **kw):
        return super().open(self._local(path), *args, **kw)

    def rename(self, sources, destinations):
        for source, destination in zip(sources, destinations):
            os.makedirs(os.path.dirname(self._local(destination)), exist_ok=True)
            os.rename(self._local(source), self._local(destination))

    def exists(self, path):
        return super().exists(self._local(path))

    def size(self, path):
        return super().size(self._local(path))

    def delete(self, paths):
        for path in paths:
            os.remove(self._local(path))

    def mkdirs(self, path):
        pass


@pytest.fixture
def bucket(tmp_path):
    ROOT[:] = [str(tmp_path / "bucket")]
    os.makedirs(ROOT[0])
    return tmp_path / "bucket"


def test_remote_helpers(bucket):
    url = f"{SCHEME}://b/dir/file.txt"
    assert fs.is_remote(url) and not fs.is_remote("/tmp/x") and not fs.is_remote("file:///tmp/x")
    fs.write_text_atomic(url, "hello")
    assert (bucket / "b" / "dir" / "file.txt").read_text() == "hello"
    assert not (bucket / "b" / "dir" / ".file.txt.tmp").exists()
    assert fs.exists(url) and fs.size(url) == 5 and fs.read_text(url) == "hello"
    assert fs.match(f"{SCHEME}://b/dir/*.txt") == [(url, 5)]


def test_pipeline_reads_and_writes_remote_paths(bucket, tmp_path):
    (bucket / "in" / "sub").mkdir(parents=True)
    (bucket / "in" / "a.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i} " * i}) for i in range(30)) + "\n{bad\n")
    (bucket / "in" / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    files = readers.list_inputs([f"{SCHEME}://in/"])
    assert [f.source for f in files] == ["a.jsonl", "sub/b.jsonl.gz"]

    job = PatchJob(inputs=[f"{SCHEME}://in/"], output=f"{SCHEME}://out", mode="space", shard_bytes=200)
    result, prepared = pipeline.run_job(job)
    counters = pipeline.metric_totals(result)
    assert counters["documents"] == 31 and counters["rejected"] == 1

    manifest = shards.read_manifest(f"{SCHEME}://out")
    assert manifest.totals["documents"] == 31 and manifest.totals["shards"] > 2
    # the same objects, seen as a local directory, form a valid shard directory
    assert shards.validate(bucket / "out") == []
    assert not list((bucket / "out").glob(".*.tmp"))
    assert sorted(p.name for p in (bucket / "out" / "data").iterdir()) == sorted(s.file for s in manifest.shards)
    assert shards.read_manifest(f"{SCHEME}://out/data").fingerprint == manifest.fingerprint  # OUT/data finds it
    # a re-run skips both inputs
    _, again = pipeline.run_job(job)
    assert again.pending == [] and len(again.files) == 2
