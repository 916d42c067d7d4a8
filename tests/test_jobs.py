"""Direct tests of `bltdata.jobs`: names, pack planning, completion records, resume checks, the manifest."""
import hashlib
import json
import os

import pytest

from bltdata import jobs, shards
from bltdata.readers import InputFile


def sha1_8(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def files(*names):
    return [InputFile(path=f"/in/{n}", source=n, format="jsonl") for n in names]


# ----------------------------------------------------------------------------- names


def test_file_key_is_a_readable_file_safe_prefix_and_a_hash_of_the_source():
    assert jobs.file_key("a/b c.jsonl") == f"a__b_c.jsonl-{sha1_8('a/b c.jsonl')}"
    assert jobs.file_key("x.txt") == f"x.txt-{sha1_8('x.txt')}"
    assert jobs.file_key("...") == f"input-{sha1_8('...')}"  # nothing safe is left: a fixed prefix
    assert jobs.file_key("é/ü") == f"input-{sha1_8('é/ü')}"  # "é__ü" -> "____", stripped of "_"
    assert jobs.file_key("é/a b") == f"a_b-{sha1_8('é/a b')}"  # "é__a b" -> "___a_b" -> "a_b"
    assert jobs.file_key("a?!b") == f"a_b-{sha1_8('a?!b')}"  # a run of unsafe characters is one "_"
    long = "d/" + "x" * 200
    assert jobs.file_key(long) == f"d__{'x' * 77}-{sha1_8(long)}"  # prefix cut at 80 characters


def test_sources_with_the_same_safe_prefix_still_get_distinct_keys():
    a, b = jobs.file_key("a/b"), jobs.file_key("a__b")
    assert a.split("-")[0] == b.split("-")[0] == "a__b"
    assert a != b


def test_shard_name():
    assert jobs.shard_name("k", 0) == "k-00000.parquet"
    assert jobs.shard_name("some-key", 123) == "some-key-00123.parquet"


# ----------------------------------------------------------------------------- packs


def test_plan_packs_groups_small_files_in_order_and_keeps_large_ones_alone():
    fs_ = files("f0", "f1", "f2", "f3", "f4", "f5", "f6")
    packs = jobs.plan_packs(fs_, [10, 20, 100, 5, 5, 60, 1], shard_bytes=50)
    assert [p.sources for p in packs] == [["f0", "f1"], ["f2"], ["f3", "f4"], ["f5"], ["f6"]]
    assert packs[1].key == jobs.file_key("f2")  # a one-file pack keeps the file's own key
    assert packs[0].key == f"{jobs.file_key('f0')}-pack2-{sha1_8(chr(10).join(['f0', 'f1']))}"


def test_plan_packs_fills_a_pack_up_to_exactly_shard_bytes():
    packs = jobs.plan_packs(files("a", "b", "c", "d"), [25, 25, 1, 50], shard_bytes=50)
    assert [p.sources for p in packs] == [["a", "b"], ["c"], ["d"]]  # 25+25 fits; a file of 50 is alone


def test_plan_packs_is_deterministic_and_its_digest_tells_plans_apart():
    names = [f"dir/file-{i}.jsonl" for i in range(30)]
    sizes = [(i * 37) % 23 for i in range(30)]
    one = jobs.plan_packs(files(*names), sizes, shard_bytes=40)
    two = jobs.plan_packs(files(*names), sizes, shard_bytes=40)
    assert one == two
    assert [s for p in one for s in p.sources] == names  # every file once, in input order
    assert all(sum(sizes[names.index(s)] for s in p.sources) <= 40 for p in one if len(p.files) > 1)
    assert 1 < len(one) < 30
    assert jobs.packing_digest(one) == jobs.packing_digest(two)
    other = jobs.plan_packs(files(*names), sizes, shard_bytes=41)
    assert [p.sources for p in other] != [p.sources for p in one]
    assert jobs.packing_digest(other) != jobs.packing_digest(one)
    assert len({p.key for p in one}) == len(one)


def test_one_pack_per_file_and_labels():
    packs = jobs.one_pack_per_file(files("a", "b"))
    assert [(p.key, p.sources) for p in packs] == [(jobs.file_key("a"), ["a"]), (jobs.file_key("b"), ["b"])]
    assert jobs.Pack("k", tuple(files("a", "b", "c"))).label == "a, b, c"
    assert jobs.Pack("k", tuple(files("a", "b", "c", "d"))).label == "a, b, c ..."


def test_input_size_and_pack_stat(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_bytes(b"1234567")
    assert jobs.input_size(str(f)) == 7
    assert jobs.input_size(str(tmp_path / "missing")) == 0
    single = jobs.Pack("k", (InputFile(str(f), "in.jsonl", "jsonl"),))
    assert jobs.pack_stat(single) == {"size": 7, "mtime_ns": os.stat(f).st_mtime_ns}
    assert jobs.pack_stat(single, {"in.jsonl": {"size": 1}}) == {"size": 1}
    pair = jobs.Pack("k", tuple(files("a", "b")))
    stats = {"a": {"size": 1}, "b": None}
    assert jobs.pack_stat(pair, stats) == stats  # a pack keeps {source: stat}


# ----------------------------------------------------------------------------- completion records


def shard_info(name: str, content: bytes, rows=3, nbytes=30, patches=9) -> shards.ShardInfo:
    return shards.ShardInfo(file=name, rows=rows, bytes=nbytes, patches=patches, row_groups=1, size=len(content),
                            sha256=hashlib.sha256(content).hexdigest(), row_group_rows=[rows],
                            row_group_bytes=[nbytes], row_group_sha256=["0" * 64])


def put_shard(out, info: shards.ShardInfo, content: bytes, data_dir=shards.DATA_DIR):
    directory = out / data_dir if data_dir else out
    directory.mkdir(parents=True, exist_ok=True)
    (directory / info.file).write_bytes(content)


def test_completion_record_round_trip_and_its_shards_must_be_in_place(tmp_path):
    content = b"x" * 11
    info = shard_info(jobs.shard_name("k", 0), content)
    record = jobs.FileRecord(source="a.jsonl", key="k", shards=[info], rejected=2, documents=3,
                             input={"size": 5, "mtime_ns": 1})
    assert jobs.read_done(tmp_path, "k", data_dir="data") is None  # no record yet
    jobs.write_done(tmp_path, record)
    assert os.listdir(tmp_path / ".bltdata" / "done") == ["k.json"]  # written atomically: no temporary left
    assert jobs.read_done(tmp_path, "k", data_dir="data") is None  # its shard is not there
    put_shard(tmp_path, info, content)
    assert jobs.read_done(tmp_path, "k", data_dir="data") is None  # its 2 rejects are not there
    shards.write_rejects(tmp_path, "k", [{"line": 1}])
    assert jobs.read_done(tmp_path, "k", data_dir="data") is None  # 1 reject of 2: stale
    shards.write_rejects(tmp_path, "k", [{"line": 1}, {"line": 2}])
    assert jobs.read_done(tmp_path, "k", data_dir="data") == record
    assert jobs.read_done(tmp_path, "k", data_dir="") is None  # looked for beside the manifest
    (tmp_path / "data" / info.file).write_bytes(content[:-1])
    assert jobs.read_done(tmp_path, "k", data_dir="data") is None  # truncated: not done


def test_changed_inputs_names_each_change_and_trusts_old_records(tmp_path):
    old = jobs.FileRecord(source="old.jsonl", key="o", input=None)
    same = jobs.FileRecord(source="same.jsonl", key="s", input={"size": 1, "mtime_ns": 2})
    jobs.changed_inputs(tmp_path, [(old, {"size": 9, "mtime_ns": 9}), (same, {"size": 1, "mtime_ns": 2})])
    grown = jobs.FileRecord(source="grown.jsonl", key="g", input={"size": 5, "mtime_ns": 7})
    gone = jobs.FileRecord(source="gone.jsonl", key="x", input={"size": 5, "mtime_ns": 7})
    with pytest.raises(jobs.StaleInputs) as err:
        jobs.changed_inputs(tmp_path, [(grown, {"size": 6, "mtime_ns": 8}), (gone, None), (same, same.input)])
    message = str(err.value)
    assert message.startswith(f"2 input(s) changed since their shards were written to {tmp_path}:")
    assert f"grown.jsonl: size 5 -> 6, mtime_ns 7 -> 8; its record: {jobs.done_path(tmp_path, 'g')}" in message
    assert "gone.jsonl: now missing or unreadable" in message
    assert "same.jsonl" not in message


def test_prepare_output_creates_the_layout_and_refuses_other_parameters(tmp_path):
    out = tmp_path / "out"
    params = {"a": 1, "b": 2, "data_dir": "data", "packing": "x"}
    jobs.prepare_output(out, params)
    assert json.loads((out / ".bltdata" / "job.json").read_text()) == params
    assert (out / "data").is_dir() and (out / ".bltdata" / "staging").is_dir() and (out / ".bltdata" / "done").is_dir()
    assert not jobs.written_before_packing(out) and not jobs.written_before_data_dir(out)
    jobs.prepare_output(out, dict(params))  # a re-run with the same parameters
    with pytest.raises(jobs.JobMismatch, match=r"other parameters \(b, c\)"):
        jobs.prepare_output(out, {"a": 1, "b": 3, "c": 0, "data_dir": "data", "packing": "x"})
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(jobs.OutputError, match="cannot use .* as the output directory"):
        jobs.prepare_output(blocker / "out", params)


def test_jobs_written_before_packing_or_data_dir_are_recognised(tmp_path):
    jobs.prepare_output(tmp_path, {"a": 1})
    assert jobs.written_before_packing(tmp_path) and jobs.written_before_data_dir(tmp_path)
    assert jobs.data_dir_of({"a": 1}) == "" and jobs.shard_dir(tmp_path, "") == str(tmp_path)
    assert jobs.shard_dir(tmp_path, "data") == str(tmp_path / "data")
    assert not jobs.written_before_packing(tmp_path / "nothing")


def test_finish_writes_the_manifest_from_every_record_and_removes_leftovers(tmp_path):
    params = {"data_dir": "data", "packing": "x"}
    jobs.prepare_output(tmp_path, params)
    packs = jobs.plan_packs(files("a", "b", "c"), [10, 100, 10], shard_bytes=50)  # [a], [b], [c]
    contents = {}
    for i, pack in enumerate(packs):
        infos = []
        for j in range(i + 1):  # 1, 2, 3 shards
            content = bytes([i, j]) * (5 + j)
            info = shard_info(jobs.shard_name(pack.key, j), content, rows=1 + j, nbytes=10 * (1 + j), patches=3)
            put_shard(tmp_path, info, content)
            contents[info.file] = content
            infos.append(info)
        jobs.write_done(tmp_path, jobs.FileRecord(pack.sources[0], pack.key, infos, rejected=i, documents=0))
        shards.write_rejects(tmp_path, pack.key, [{"n": n} for n in range(i)])
    for leftover in (tmp_path / ".x.tmp", tmp_path / "data" / ".y.tmp", tmp_path / ".bltdata" / "staging" / ".z.tmp"):
        leftover.write_bytes(b"partial")
    manifest = jobs.finish(tmp_path, packs, params, patcher={"mode": "space"}, entropy_model=None)
    # 6 shards: rows 1 | 1 2 | 1 2 3 = 10; bytes 10 | 10 20 | 10 20 30 = 100; 3 patches each; rejected 0+1+2
    assert manifest.totals == {"shards": 6, "documents": 10, "bytes": 100, "patches": 18, "row_groups": 6,
                               "size": sum(len(c) for c in contents.values()), "rejected": 3}
    assert [s.file for s in manifest.shards] == sorted(contents)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["totals"] == manifest.totals and written["data_dir"] == "data"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_finish_refuses_a_pack_without_a_completion_record(tmp_path):
    params = {"data_dir": "data"}
    jobs.prepare_output(tmp_path, params)
    packs = jobs.one_pack_per_file(files("done.jsonl", "missing.jsonl"))
    jobs.write_done(tmp_path, jobs.FileRecord("done.jsonl", packs[0].key, [], 0, 0))
    with pytest.raises(RuntimeError, match="missing.jsonl: no completion record"):
        jobs.finish(tmp_path, packs, params, patcher={}, entropy_model=None)
    assert not (tmp_path / "manifest.json").exists()
