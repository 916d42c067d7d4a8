"""show / locate / head / plot through click's CliRunner, and help text of every command."""
import json
import re
import struct

import click
import pytest
from click.testing import CliRunner

from bltdata.cli.main import main
from bltdata.inspect.synthetic import write_synthetic_dir
from bltdata.shards import iter_rows, shard_files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "shards"
    write_synthetic_dir(out, shards=3, docs_per_shard=10, invalid_every=4, words=(5, 40))
    return out


@pytest.fixture(scope="module")
def rows(shards_dir):
    return [row for shard in shard_files(shards_dir) for row in iter_rows(shard)]


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def test_locate_every_index_and_by_doc(shards_dir, rows):
    for index in (0, 9, 10, 29):
        result = invoke("locate", shards_dir, index, "--json")
        assert result.exit_code == 0, result.output
        loc = json.loads(result.output)
        assert loc["index"] == index and loc["doc_id"] == rows[index]["doc_id"]
        assert loc["shard"].endswith(f"shard-{index // 10:05d}.parquet") and loc["row"] == index % 10
        assert loc["source"] == rows[index]["source"]
    assert json.loads(invoke("locate", shards_dir, "--doc", "doc-17", "--json").output)["index"] == 17
    text = invoke("locate", shards_dir, 12).output
    assert "row_group" in text and "doc-12" in text


def test_locate_errors(shards_dir):
    result = invoke("locate", shards_dir, 30)
    assert result.exit_code == 2 and "30 documents" in result.output
    result = invoke("locate", shards_dir, "--doc", "nope")
    assert result.exit_code == 1 and "nope" in result.output
    assert invoke("locate", shards_dir).exit_code == 2


def test_locate_out_of_range_names_the_index_not_row(shards_dir):
    result = invoke("locate", shards_dir, 123456)
    assert result.exit_code == 2
    assert "INDEX" in result.output and "123456" in result.output and "--row" not in result.output
    shown = invoke("show", shards_dir, "--row", 123456)   # show takes it as --row, and says so
    assert shown.exit_code == 2 and "--row" in shown.output


def test_head(shards_dir, rows):
    result = invoke("head", shards_dir, "-n", "12", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [r["doc_id"] for r in listed] == [r["doc_id"] for r in rows[:12]]
    assert listed[11]["row"] == 1 and listed[11]["num_bytes"] == len(rows[11]["bytes"])
    assert len(invoke("head", shards_dir, "-n", "3").output.strip().splitlines()) == 4


def test_show_plain_separators_and_escapes(shards_dir, rows):
    invalid = next(i for i, r in enumerate(rows) if b"\xff" in r["bytes"])
    result = invoke("show", shards_dir, "--row", invalid)
    assert result.exit_code == 0, result.output
    body = result.output.split("\n", 3)[3]
    assert "\\xff" in body and "\x1b[" not in body
    assert body.count("|") - body.count("\\|") == len(rows[invalid]["patch_lengths"]) - 1
    assert f"{len(rows[invalid]['patch_lengths'])} patches" in result.output


def test_show_colour_entropies_and_json(shards_dir, rows):
    result = invoke("show", shards_dir, "--doc", "doc-2", "--color", "--entropies", color=True)
    assert result.exit_code == 0, result.output
    assert "\x1b[44m" in result.output and "\x1b[46m" in result.output and "entropy strip" in result.output
    result = invoke("show", shards_dir, "--row", 2, "--json")
    shown = json.loads(result.output)
    assert shown["patch_lengths"] == rows[2]["patch_lengths"] and shown["location"]["doc_id"] == "doc-2"
    assert "".join(shown["patches"]) == rows[2]["bytes"].decode("utf-8", "backslashreplace")
    short = invoke("show", shards_dir, "--row", 2, "--max-bytes", "5")
    assert "showing the first 5" in short.output
    assert invoke("show", shards_dir, "--row", 2, "--doc", "doc-2").exit_code == 2


def test_show_entropies_missing(tmp_path):
    write_synthetic_dir(tmp_path / "plain", shards=1, docs_per_shard=2, store_entropies=False)
    result = invoke("show", tmp_path / "plain", "--entropies")
    assert result.exit_code == 1 and "shard-00000.parquet" in result.output
    result = invoke("plot", tmp_path / "plain", "--row", 0, "-o", tmp_path / "x.png")
    assert result.exit_code == 1 and "shard-00000.parquet" in result.output and not (tmp_path / "x.png").exists()
    single = invoke("show", tmp_path / "plain" / "data" / "shard-00000.parquet", "--row", 1)   # one shard file
    assert single.exit_code == 0 and "doc-1" in single.output


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24]), len(data)


def test_plot_entropies_and_histogram(shards_dir, tmp_path):
    result = invoke("plot", shards_dir, "--row", 3, "-o", tmp_path / "doc.png", "--max-bytes", 80)
    assert result.exit_code == 0, result.output
    (width, height), size = png_size(tmp_path / "doc.png")
    assert 600 <= width <= 3000 and 250 <= height <= 1000 and size > 10_000
    result = invoke("plot", shards_dir, "--hist", "-o", tmp_path / "hist.png", "--max-length", 16)
    assert result.exit_code == 0, result.output
    (width, height), size = png_size(tmp_path / "hist.png")
    assert 600 <= width <= 2000 and 250 <= height <= 1000 and size > 5_000
    assert not list(tmp_path.glob(".*.tmp"))
    assert invoke("plot", shards_dir, "--hist", "--row", 1, "-o", tmp_path / "x.png").exit_code == 2


def test_plot_needs_row_doc_or_hist(shards_dir, tmp_path):
    result = invoke("plot", shards_dir, "-o", tmp_path / "none.png")
    assert result.exit_code == 2
    assert all(option in result.output for option in ("--row", "--doc", "--hist"))
    assert not (tmp_path / "none.png").exists()


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


def test_every_command_has_help_with_an_example():
    commands = list(all_commands(main))
    assert len(commands) >= 8
    missing = []
    for path, command in commands:
        result = CliRunner().invoke(main, [*path, "--help"])
        if result.exit_code != 0 or not re.search(r"Examples?:", result.output):
            missing.append(" ".join(path))
    assert missing == [], f"commands without an Example in --help: {missing}"
