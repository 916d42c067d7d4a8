"""`bltdata verify` / `inspect` / `patch` through click, and the CLI's start-up cost."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bltdata import shards
from bltdata.cli.main import main


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "in"
    corpus.mkdir()
    lines = [json.dumps({"id": f"d{i}", "text": "word " * (i % 40)}) for i in range(120)] + ["{broken"]
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "b.txt").write_bytes(b"plain text \xff document")
    result = CliRunner().invoke(main, ["patch", str(corpus), "-o", str(root / "out"), "--mode", "space",
                                       "--shard-bytes", "1500", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "121 documents" in result.output and "1 rejected" in result.output
    return root / "out"


def test_inspect_json_equals_the_manifest(shard_dir):
    result = CliRunner().invoke(main, ["inspect", str(shard_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    totals = shards.read_manifest(shard_dir).totals
    for key in ("documents", "bytes", "patches", "shards", "rejected"):
        assert summary[key] == totals[key]
    assert summary["documents"] == 121 and summary["shards"] > 3
    assert summary["mean_patch_bytes"] == pytest.approx(totals["bytes"] / totals["patches"])
    assert summary["patcher"]["mode"] == "space"


def test_inspect_one_shard(shard_dir):
    shard = shards.shard_files(shard_dir)[0]
    result = CliRunner().invoke(main, ["inspect", str(shard), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    rows = list(shards.iter_rows(shard))
    assert summary["documents"] == len(rows) > 0
    assert summary["bytes"] == sum(r["num_bytes"] for r in rows)


def test_verify_ok_then_names_the_damaged_file(shard_dir, tmp_path):
    assert CliRunner().invoke(main, ["verify", str(shard_dir)]).exit_code == 0
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    victim = shards.shard_files(copy)[1]
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0x01
    victim.write_bytes(bytes(raw))
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1
    assert str(victim) in result.output and "sha256" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["verify", str(copy), "--json"]).output)
    assert as_json["ok"] is False and as_json["problems"][0]["file"] == str(victim)


def test_patch_usage_errors(tmp_path):
    result = CliRunner().invoke(main, ["patch", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "missing.jsonl" in result.output
    result = CliRunner().invoke(main, ["patch", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); from bltdata.cli.main import main; "
            "heavy = [m for m in ('torch', 'apache_beam', 'numba', 'pyarrow', 'polars') if m in sys.modules]; "
            "print(heavy, time.perf_counter() - t)")
    heavy, seconds = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.rsplit(" ", 1)
    assert heavy == "[]"
    assert float(seconds) < 1.0
