"""The shard sink writes a pack's batches in order and refuses a batch out of order."""
import numpy as np
import pytest

from bltdata import jobs, shards
from bltdata.batching import iter_doc_batches
from bltdata.readers import Document
from bltdata.sink import BatchOrderError, ShardSink


def _batches(n_docs=6, batch_bytes=20, shard_bytes=40):
    docs = [Document(f"d{i}", "a.jsonl", i + 1, bytes([97 + i]) * 10) for i in range(n_docs)]
    batches = list(iter_doc_batches(docs, source="a.jsonl", batch_bytes=batch_bytes, shard_bytes=shard_bytes))
    for b in batches:
        b.patch_lengths = [np.array([len(d)], dtype=np.int32) for d in b.data]
    return batches


def _sink(out):
    jobs.prepare_output(out, {"data_dir": "data"})
    return ShardSink(out, data_dir="data", patcher={"mode": "space"}, entropy_model=None, store_entropies=False)


def test_batches_in_order_give_shards_and_a_completion_record(tmp_path):
    batches = _batches()
    assert [b.order for b in batches] == [(0, 0), (0, 1), (1, 0)]
    sink = _sink(tmp_path)
    records = [sink.consume(b) for b in batches]
    assert records[:-1] == [None] * 2
    record = records[-1]
    assert record.documents == 6 and [s.rows for s in record.shards] == [4, 2]
    assert jobs.read_done(tmp_path, record.key, data_dir="data").to_dict() == record.to_dict()
    assert sink.unfinished() == []
    rows = [r["doc_id"] for s in record.shards for r in shards.iter_rows(tmp_path / "data" / s.file)]
    assert rows == [f"d{i}" for i in range(6)]


def test_a_batch_out_of_order_raises_naming_the_file_and_the_orders(tmp_path):
    batches = _batches()
    sink = _sink(tmp_path)
    sink.consume(batches[0])
    with pytest.raises(BatchOrderError, match=r"a\.jsonl .*expected batch \(shard, batch\) \(0, 1\), got \(1, 0\)"):
        sink.consume(batches[2])
    assert sink.unfinished() == []  # aborted: nothing half-written is kept open
    assert list((tmp_path / "data").iterdir()) == []
    assert jobs.read_done(tmp_path, batches[0].key, data_dir="data") is None
