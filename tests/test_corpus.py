"""Tests for bltdata.corpus: the embedded default corpus built from the running Python."""
from __future__ import annotations

import json
import logging
import os

import pytest

from bltdata import corpus
from bltdata.corpus import CORPUS_FILE_NAME, default_corpus_files, write_default_corpus
from bltdata.readers import Document, list_inputs, read_input


@pytest.fixture(scope="module")
def full_corpus():
    return default_corpus_files()


def test_full_corpus_is_deterministic_and_ordered(full_corpus):
    names = [name for name, _ in full_corpus]
    topics = [n for n in names if n.startswith("pydoc_topics/")]
    sources = [n for n in names if n.startswith("stdlib/")]
    assert len(topics) > 10 and len(sources) > 100
    assert names == topics + sources  # topics first, then .py files
    assert sources == sorted(sources) and len(set(names)) == len(names)
    assert "stdlib/json/decoder.py" in sources
    assert sum(len(data) for _, data in full_corpus) > 1_000_000
    assert default_corpus_files() == full_corpus


def test_full_corpus_leaves_out_tests_site_packages_and_build_files(full_corpus):
    paths = [name.removeprefix("stdlib/") for name, _ in full_corpus if name.startswith("stdlib/")]
    assert len(paths) > 100 and all(p.endswith(".py") for p in paths)
    for path in paths:
        parts = path.split("/")
        assert not {"site-packages", "test", "tests", "idle_test"} & set(parts), path
        assert not parts[-1].startswith("_sysconfigdata_") and not parts[0].startswith("config-")
    assert "pydoc_data/topics.py" not in paths
    for _, data in full_corpus:
        data.decode("utf-8")  # every document is valid UTF-8 text


def test_topics_are_the_pydoc_documentation(full_corpus):
    from pydoc_data.topics import topics

    first_name, first_data = full_corpus[0]
    name = sorted(topics)[0]
    assert first_name == f"pydoc_topics/{name}" and first_data == topics[name].encode("utf-8")


def test_max_bytes_takes_the_shortest_prefix_reaching_it(full_corpus):
    assert default_corpus_files(max_bytes=0) == []
    for budget in (1, 50_000, 2_000_000):
        items = default_corpus_files(max_bytes=budget)
        total = sum(len(data) for _, data in items)
        assert items == full_corpus[: len(items)] and len(items) > 0
        assert total >= budget and total - len(items[-1][1]) < budget
    huge = default_corpus_files(max_bytes=10**12)
    assert huge == full_corpus


def test_write_default_corpus_reads_back_through_the_readers(tmp_path):
    path = write_default_corpus(tmp_path / "out", max_bytes=300_000)
    assert path == tmp_path / "out" / CORPUS_FILE_NAME and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [CORPUS_FILE_NAME]  # no temp file left
    expected = default_corpus_files(max_bytes=300_000)
    (input_file,) = list_inputs([str(path)])
    records = list(read_input(input_file))
    assert all(isinstance(r, Document) for r in records) and len(records) == len(expected) > 0
    assert [(r.doc_id, r.data) for r in records] == expected
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"id", "text"}


def test_stdlib_walk_rules_and_non_utf8_skip(tmp_path, monkeypatch, caplog):
    files = {
        "a.py": b"print('a')\n",
        "bad.py": b"# -*- coding: latin-1 -*-\nname = '\xe9'\n",
        "pkg/b.py": b"B = 1\n",
        "pkg/tests/t.py": b"",
        "test/t.py": b"",
        "site-packages/s.py": b"",
        "idlelib/idle_test/i.py": b"",
        "config-3.11-x86_64-linux-gnu/python-config.py": b"",
        "_sysconfigdata__linux.py": b"",
        "pydoc_data/topics.py": b"topics = {}\n",
        "notes.txt": b"not python",
        "__pycache__/a.py": b"",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    monkeypatch.setattr(corpus.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    with caplog.at_level(logging.INFO, logger="bltdata.corpus"):
        items = [(n, d) for n, d in default_corpus_files() if n.startswith("stdlib/")]
    assert items == [("stdlib/a.py", files["a.py"]), ("stdlib/pkg/b.py", files["pkg/b.py"])]
    assert any("bad.py" in rec.getMessage() for rec in caplog.records)


def test_rewriting_the_same_corpus_keeps_the_file_as_it_is(tmp_path):
    path = write_default_corpus(tmp_path, max_bytes=50_000)
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))  # a second older: a rewrite would move it
    assert write_default_corpus(tmp_path, max_bytes=50_000) == path
    assert path.stat().st_mtime_ns == before - 10**9
    bigger = write_default_corpus(tmp_path, max_bytes=80_000)
    assert bigger.stat().st_size > 0 and bigger.stat().st_mtime_ns != before - 10**9
    assert sorted(p.name for p in tmp_path.iterdir()) == [CORPUS_FILE_NAME]


def test_demo_runs_twice_in_the_same_directory(tmp_path):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    args = ["demo", "-o", str(tmp_path / "demo"), "--max-bytes", "20000", "--no-progress"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "1 input(s) already done, skipped" in second.output


def test_demo_ends_with_three_next_commands_that_run(tmp_path, monkeypatch):
    import shlex

    from click.testing import CliRunner

    from bltdata.cli.main import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "-o", "demo", "--max-bytes", "20000", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tail = result.output.rstrip().split("next, try:")[-1].strip().splitlines()
    commands = [shlex.split(line.split("#")[0]) for line in tail]
    assert len(commands) == 3 and all(c[0] == "bltdata" for c in commands), result.output
    for command in commands:
        ran = CliRunner().invoke(main, command[1:], catch_exceptions=False)
        assert ran.exit_code == 0, f"{command}: {ran.output}"
