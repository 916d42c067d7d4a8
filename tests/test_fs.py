"""Local paths of bltdata.fs: the one atomic-write mechanism every writer uses."""
import os

import pytest

from bltdata import fs


def test_atomic_write_publishes_on_success(tmp_path):
    final = tmp_path / "out.bin"
    with fs.AtomicWrite(final) as tmp:
        assert tmp == str(tmp_path / ".out.bin.tmp")
        with open(tmp, "wb") as f:
            f.write(b"done")
        assert not final.exists()
    assert final.read_bytes() == b"done"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_leaves_nothing_when_writing_fails(tmp_path):
    final = tmp_path / "data" / "out.bin"
    staging = tmp_path / "staging"
    with pytest.raises(RuntimeError, match="killed"):
        with fs.AtomicWrite(final, staging_dir=staging) as tmp:
            assert tmp == str(staging / ".out.bin.tmp")
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("killed")
    assert not final.exists()
    assert os.listdir(staging) == [] and os.listdir(tmp_path / "data") == []


def test_write_bytes_atomic_leaves_nothing_when_writing_fails(tmp_path, monkeypatch):
    fs.write_bytes_atomic(str(tmp_path / "a.json"), b"{}")
    assert (tmp_path / "a.json").read_bytes() == b"{}"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fs, "publish", fail)
    with pytest.raises(OSError, match="disk full"):
        fs.write_bytes_atomic(str(tmp_path / "b.json"), b"{}")
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_temporary_name_beside_or_in_staging():
    assert fs.temporary_name("/x/y/s.parquet") == "/x/y/.s.parquet.tmp"
    assert fs.temporary_name("/x/y/s.parquet", "/x/stage") == "/x/stage/.s.parquet.tmp"
    assert fs.temporary_name("gs://b/d/s.parquet") == "gs://b/d/.s.parquet.tmp"
    assert fs.temporary_name("gs://b/d/s.parquet", "gs://b/stage") == "gs://b/stage/.s.parquet.tmp"
