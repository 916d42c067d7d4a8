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


def _edit(entry_key, delta, *, rg_key=None, total_key=None):
    """An edit of one figure of the first shard entry, and (if named) of what must add up with it."""
    def edit(doc):
        entry = doc["shards"][0]
        entry[entry_key] += delta
        if rg_key:
            entry[rg_key][0] += delta
        if total_key:
            doc["totals"][total_key] += delta
    return edit


def _set(path, value):
    def edit(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value(target[last])
    return edit


def _refingerprint(doc):
    doc["fingerprint"] = shards.manifest_fingerprint([shards.ShardInfo.from_dict(s) for s in doc["shards"]])


# Edits that keep the manifest consistent with itself (totals and fingerprint follow): only a
# comparison with the shards can catch them.
CONSISTENT_EDITS = {
    "bytes": _edit("bytes", 1, rg_key="row_group_bytes", total_key="bytes"),
    "patches": _edit("patches", 1, total_key="patches"),
    "rows": _edit("rows", 1, rg_key="row_group_rows", total_key="documents"),
    "size": _edit("size", 7, total_key="size"),
    "sha256": _set(["shards", 0, "sha256"], lambda v: "0" * 64),
    "row_group_sha256": _set(["shards", 0, "row_group_sha256"], lambda v: ["f" * 64] + v[1:]),
    "row_groups": lambda doc: (_edit("row_groups", 1, total_key="row_groups")(doc),
                               [doc["shards"][0][k].append(v) for k, v in
                                (("row_group_rows", 0), ("row_group_bytes", 0), ("row_group_sha256", "0" * 64))]),
}
# Edits of one figure alone: the manifest then contradicts itself, which the loader refuses too.
SINGLE_EDITS = {
    **{f"shards.{key}": _set(["shards", 0, key], lambda v: v + 1)
       for key in ("bytes", "patches", "rows", "row_groups", "size")},
    "shards.row_group_bytes": _set(["shards", 0, "row_group_bytes"], lambda v: [v[0] + 1] + v[1:]),
    "shards.row_group_rows": _set(["shards", 0, "row_group_rows"], lambda v: [v[0] + 1] + v[1:]),
    "shards.sha256": _set(["shards", 0, "sha256"], lambda v: "0" * 64),
    "shards.row_group_sha256": _set(["shards", 0, "row_group_sha256"], lambda v: ["f" * 64] + v[1:]),
    **{f"totals.{key}": _set(["totals", key], lambda v: v + 1)
       for key in ("shards", "documents", "bytes", "patches", "row_groups", "size", "rejected")},
    "fingerprint": _set(["fingerprint"], lambda v: "0" * len(v)),
}


def _edited_copy(shard_dir, tmp_path, edit, *, refingerprint=False):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    manifest_file = copy / shards.MANIFEST_NAME
    doc = json.loads(manifest_file.read_text())
    edit(doc)
    if refingerprint:
        _refingerprint(doc)
    manifest_file.write_text(json.dumps(doc))
    return copy, manifest_file, doc["shards"][0]["file"]


@pytest.mark.parametrize("name", sorted(CONSISTENT_EDITS))
def test_verify_compares_every_manifest_figure_with_the_shards(shard_dir, tmp_path, name):
    copy, manifest_file, first = _edited_copy(shard_dir, tmp_path, CONSISTENT_EDITS[name], refingerprint=True)
    assert shards.manifest_problems(shards.read_manifest(copy, check=False)) == []  # consistent with itself
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and str(copy / shards.DATA_DIR / first) in result.output, result.output
    assert "ok:" not in result.output


@pytest.mark.parametrize("name", sorted(SINGLE_EDITS))
def test_every_single_figure_edit_is_refused_by_verify_and_the_loader(shard_dir, tmp_path, name):
    from bltdata.data import DataConfig, PatchedDataset, ShardMismatchError

    copy, manifest_file, first = _edited_copy(shard_dir, tmp_path, SINGLE_EDITS[name])
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and (str(manifest_file) in result.output or str(copy / shards.DATA_DIR / first) in result.output)
    assert "ok:" not in result.output
    if name == "totals.rejected":
        return  # the loader does not read rejected/; verify counts it
    with pytest.raises(ShardMismatchError) as err:
        list(PatchedDataset(copy, DataConfig(seq_len=64, batch_size=4, epochs=1, shuffle=False)).slot_stream())
    assert str(manifest_file) in str(err.value) or str(copy / shards.DATA_DIR / first) in str(err.value)
    if shards.manifest_problems(shards.read_manifest(copy, check=False)):  # all but a row group's sha256
        inspect = CliRunner().invoke(main, ["inspect", str(copy)])  # refuses rather than print wrong totals
        assert inspect.exit_code == 1 and str(manifest_file) in inspect.output
