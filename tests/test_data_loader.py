"""PatchedDataset end to end on small shard sets written with bltdata.shards.

Every document is one byte value repeated (a distinct value per document), so the bytes a
run delivers can be attributed to their documents exactly: a byte delivered twice or lost
shows up as a count that differs from the document's length.
"""
import itertools
import json

import numpy as np
import pytest
import torch

from bltdata import shards
from bltdata.data import loader as loader_module
from bltdata.data.loader import DataConfig, PatchedDataset, ResumableLoader
from bltdata.data.order import all_work_tokens
from bltdata.data.source import ShardMismatchError
from bltdata.data.state import StateError
from bltdata.ids import BOS_ID, EOS_ID, OFFSET, PAD_ID

PATCHER = {"mode": "space", "threshold": None, "threshold_add": None, "max_patch_length": None, "patch_size": 4}
L = 64


def write_constant_docs(out, *, n_shards=4, docs_per_shard=50, max_len=150, row_group_bytes=400, seed=0):
    """Shards whose documents are each one distinct byte value repeated; returns {value: (length, patches)}."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(256)[:n_shards * docs_per_shard]
    docs, infos = {}, []
    out.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        writer = shards.ShardWriter(out / f"part-{s:05d}.parquet", patcher=PATCHER, row_group_bytes=row_group_bytes)
        for i in range(docs_per_shard):
            value = int(values[s * docs_per_shard + i])
            n = 0 if i % 9 == 4 else int(rng.integers(1, max_len))
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, n // 4), replace=False)) if n > 1 else []
            lengths = np.diff(np.concatenate([[0], cuts, [n]])).astype(np.int32) if n else np.zeros(0, np.int32)
            writer.add(f"doc-{value}", "synthetic", bytes([value]) * n, lengths)
            docs[value] = (n, lengths)
        infos.append(writer.close())
    shards.write_manifest(out, {"test": True}, infos, 0, data_dir="", patcher=PATCHER)
    return docs


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return out, write_constant_docs(out)


def expected_counts(docs, epochs=1):
    counts = np.zeros(256, dtype=np.int64)
    for value, (n, _) in docs.items():
        counts[value] = n * epochs
    return counts


def delivered_counts(batches):
    return sum((token_counts(b["tokens"]) for b in batches), np.zeros(256, dtype=np.int64))


def token_counts(tokens):
    t = np.asarray(tokens).ravel()
    return np.bincount(t[t >= OFFSET] - OFFSET, minlength=256)


def run_job(path, config, world_size, workers, *, state=None, remainders=None):
    """Every slot's batches, simulating DataLoader workers by building each worker's stream.

    `remainders` (an array of 256 counts), if given, receives the bytes of each slot's final
    partial sequence, the only thing a finite run does not deliver.
    """
    k = max(1, workers)
    out = {}
    for rank in range(world_size):
        ds = PatchedDataset(path, config, rank=rank, world_size=world_size)
        if state is not None:
            ds.load_state_dict(state)
        for w in range(k):
            stream = ds.slot_stream(w, k)
            out[(rank, w)] = list(stream)
            if remainders is not None:
                (source,) = stream.streams
                assert len(source.rest) < config.seq_len and source.cur is None  # read to the end
                remainders += token_counts(source.rest.tokens)
    return out


def check_batch_invariants(batch, seq_len=L):
    tokens, patches, doc_ids = (np.asarray(batch[k]) for k in ("tokens", "patch_lengths", "doc_ids"))
    assert tokens.dtype == patches.dtype == doc_ids.dtype == np.int64
    assert tokens.shape == doc_ids.shape and tokens.shape[1] == seq_len
    np.testing.assert_array_equal(patches.sum(axis=1), seq_len)
    for row_tokens, row_patches in zip(tokens, patches):
        lengths = row_patches[row_patches > 0]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ends = np.cumsum(lengths) - 1
        bos = np.flatnonzero(row_tokens == BOS_ID)
        assert set(bos) <= set(starts) and all(lengths[np.searchsorted(starts, bos)] == 1)  # BOS: its own patch
        assert set(np.flatnonzero(row_tokens == EOS_ID)) <= set(ends)                       # EOS ends a patch
    bos = tokens == BOS_ID
    bos[:, 0] = True
    return bos


@pytest.mark.parametrize("world_size,workers", list(itertools.product([1, 2, 3, 4], [0, 1, 2, 3])))
def test_an_epoch_delivers_every_byte_once(dataset_dir, world_size, workers):
    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, even_batches=False, shuffle_window=2)
    remainders = np.zeros(256, dtype=np.int64)
    out = run_job(path, config, world_size, workers, remainders=remainders)
    batches = [b for bs in out.values() for b in bs]
    assert len(batches) > 0
    for b in batches:
        bos = check_batch_invariants(b)
        np.testing.assert_array_equal(np.asarray(b["doc_ids"]), np.cumsum(bos, axis=1) - 1)
    got, want = delivered_counts(batches), expected_counts(docs)
    # every byte exactly once, except each slot's final partial sequence (< seq_len tokens)
    np.testing.assert_array_equal(got + remainders, want)
    src = PatchedDataset(path, config).sources[0]
    num_slots = world_size * max(1, workers)
    work = all_work_tokens(loader_module.Plan(), num_slots, src.epoch, src.tokens_per_epoch, 1)
    assert sum(np.asarray(b["tokens"]).size for b in batches) == int((work // L * L).sum())
    assert (want - got).sum() <= num_slots * (L - 1)


@pytest.mark.parametrize("world_size,workers", [(1, 0), (2, 3), (3, 2), (4, 1)])
def test_even_batches_give_every_rank_the_same_count(dataset_dir, world_size, workers):
    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=3, epochs=1, even_batches=True, shuffle_window=2)
    out = run_job(path, config, world_size, workers)
    per_rank = [sum(len(out[(r, w)]) for w in range(max(1, workers))) for r in range(world_size)]
    assert len(set(per_rank)) == 1 and per_rank[0] > 0
    assert (delivered_counts([b for bs in out.values() for b in bs]) <= expected_counts(docs)).all()


def test_order_does_not_depend_on_world_size(dataset_dir):
    path, _ = dataset_dir
    whole = DataConfig(seq_len=1, batch_size=100_000, epochs=1, shuffle_window=2)
    stream = np.concatenate([np.asarray(b["tokens"]).ravel() for b in PatchedDataset(path, whole).slot_stream()])
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, even_batches=False, shuffle_window=2)
    checked = 0
    for rank in range(3):
        ds = PatchedDataset(path, config, rank=rank, world_size=3)
        for w in range(2):
            slot = ds.slot_stream(w, 2)
            start = slot.state()["sources"][0]["position"]
            got = np.concatenate([np.asarray(b["tokens"]).ravel() for b in slot])
            np.testing.assert_array_equal(got, stream[start:start + len(got)])
            checked += len(got)
    assert checked > 0.9 * len(stream)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]))


@pytest.mark.parametrize("epochs", [1, None])
def test_resume_after_k_batches_equals_uninterrupted(dataset_dir, epochs):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=3, epochs=epochs, shuffle_window=2)
    total = 60  # with epochs=None this crosses into the next epochs (seams, reshuffles)
    for rank, w in [(0, 0), (1, 1)]:
        full = take(PatchedDataset(path, config, rank=rank, world_size=2).slot_stream(w, 2), total)
        for k in (0, 1, 7, len(full) - 1):
            ds = PatchedDataset(path, config, rank=rank, world_size=2)
            stream = ds.slot_stream(w, 2)
            first = take(stream, k)
            saved = json.loads(json.dumps(stream.state()))  # plain data: survives JSON / torch.save
            resumed = PatchedDataset(path, config, rank=rank, world_size=2)
            resumed.load_state_dict(saved)
            rest = take(resumed.slot_stream(w, 2), total - k)
            assert_same_batches(first + rest, full)


def test_resume_with_a_plain_dataloader_and_two_workers(dataset_dir):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)
    full = take(ResumableLoader(PatchedDataset(path, config), num_workers=2), 25)
    loader = ResumableLoader(PatchedDataset(path, config), num_workers=2)
    first = take(loader, 9)  # odd: the next batch comes from worker 1
    state = loader.state_dict()
    again = ResumableLoader(PatchedDataset(path, config), num_workers=2)
    again.load_state_dict(state)
    assert_same_batches(first + take(again, 16), full)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_stateful_dataloader(dataset_dir, workers):
    from torchdata.stateful_dataloader import StatefulDataLoader

    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)

    def make():
        return StatefulDataLoader(PatchedDataset(path, config), batch_size=None, num_workers=workers)
    full = take(make(), 21)
    loader = make()
    first = take(loader, 7)
    state = loader.state_dict()
    again = make()
    again.load_state_dict(state)
    assert_same_batches(first + take(again, 14), full)


@pytest.mark.parametrize("old,new", [((2, 2), (3, 0)), ((3, 0), (1, 2)), ((1, 3), (4, 1))])
def test_elastic_resume_loses_and_repeats_nothing(dataset_dir, old, new):
    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=2, even_batches=False, shuffle_window=2)
    (old_world, old_workers), (new_world, new_workers) = old, new
    rng = np.random.default_rng(sum(old) + sum(new))
    before, states = [], []
    for rank in range(old_world):
        ds = PatchedDataset(path, config, rank=rank, world_size=old_world)
        k = max(1, old_workers)
        for w in range(k):
            stream = ds.slot_stream(w, k)
            before += take(stream, int(rng.integers(0, 20)))  # slots stop at different places
            states.append(json.loads(json.dumps(stream.state())))
    remainders = np.zeros(256, dtype=np.int64)
    after = run_job(path, config, new_world, new_workers, state=states, remainders=remainders)
    after_batches = [b for bs in after.values() for b in bs]
    assert len(before) > 0 and len(after_batches) > 0
    for b in after_batches:
        bos = check_batch_invariants(b)
        doc_ids = np.asarray(b["doc_ids"])
        assert (np.diff(doc_ids, axis=1) >= 0).all() and (doc_ids[:, 0] == 0).all()
        assert (doc_ids[:, -1] >= bos.sum(axis=1) - 1).all()  # a segment at every BOS (and at seams)
    got, want = delivered_counts(before + after_batches), expected_counts(docs, epochs=2)
    np.testing.assert_array_equal(got + remainders, want)


def test_elastic_resume_from_resumable_loader_rank_states(dataset_dir):
    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, even_batches=False, shuffle_window=2)
    before, rank_states = [], []
    for rank in range(2):
        loader = ResumableLoader(PatchedDataset(path, config, rank=rank, world_size=2), num_workers=0)
        before += take(loader, 5 + rank)
        rank_states.append(loader.state_dict())
    remainders = np.zeros(256, dtype=np.int64)
    after = run_job(path, config, 3, 0, state=rank_states, remainders=remainders)
    got = delivered_counts(before + [b for bs in after.values() for b in bs])
    assert len(before) == 11
    np.testing.assert_array_equal(got + remainders, expected_counts(docs))


def test_a_partial_state_cannot_resume_another_layout(dataset_dir):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)
    state = PatchedDataset(path, config, rank=0, world_size=2).state_dict()
    ds = PatchedDataset(path, config, rank=0, world_size=3)
    ds.load_state_dict(state)
    with pytest.raises(StateError, match="states of all ranks|missing"):
        ds.slot_stream()


def test_changed_manifest_is_refused(tmp_path):
    path = tmp_path / "data"
    write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=1)
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=1)
    stream = PatchedDataset(path, config).slot_stream()
    take(stream, 3)
    state = stream.state()
    write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=2)  # same names, other content
    with pytest.raises(StateError, match="fingerprint") as err:
        PatchedDataset(path, config).load_state_dict(state)
    assert str(path / "manifest.json") in str(err.value)
    other = PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, shuffle_window=1, seed=5))
    with pytest.raises(StateError, match="seed"):
        other.load_state_dict(PatchedDataset(path, config).state_dict())


def test_replaced_shard_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_constant_docs(a, n_shards=2, docs_per_shard=20, seed=1)
    write_constant_docs(b, n_shards=2, docs_per_shard=20, seed=2)
    ds = PatchedDataset(a, DataConfig(seq_len=L, batch_size=2, shuffle=False))
    (a / "part-00000.parquet").write_bytes((b / "part-00000.parquet").read_bytes())
    with pytest.raises(ShardMismatchError, match="part-00000.parquet"):
        take(ds.slot_stream(), 50)


def test_startup_and_resume_read_only_what_they_need(dataset_dir, monkeypatch):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, shuffle_window=2)
    opened = []
    real_open = shards.open_shard
    monkeypatch.setattr(shards, "open_shard", lambda p: opened.append(p) or real_open(p))
    ds = PatchedDataset(path, config)
    state = ds.state_dict()
    assert opened == [] and state["sources"][0]["position"] == 0  # start-up: the manifest only
    reads = []
    src = ds.sources[0]
    real_read = src.read_row_group
    monkeypatch.setattr(src, "read_row_group", lambda rg: reads.append(rg) or real_read(rg))
    full = list(ds.slot_stream())
    stream = ds.slot_stream()
    take(stream, int(0.9 * len(full)))
    resumed = PatchedDataset(path, config)
    resumed.load_state_dict(stream.state())
    src2 = resumed.sources[0]
    real_read2 = src2.read_row_group
    reads.clear()
    monkeypatch.setattr(src2, "read_row_group", lambda rg: reads.append(rg) or real_read2(rg))
    next(iter(resumed.slot_stream()))
    assert 0 < len(reads) <= 2 * config.shuffle_window  # one window (two if the sequence spans a boundary)


def test_mixing_proportions_by_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_constant_docs(a, n_shards=2, docs_per_shard=40, max_len=60, seed=3)
    write_constant_docs(b, n_shards=2, docs_per_shard=40, max_len=300, seed=4)
    config = DataConfig(seq_len=L, batch_size=4, shuffle_window=2, return_source=True)
    ds = PatchedDataset({str(a): 0.3, str(b): 0.7}, config)
    batches = take(ds.slot_stream(), 400)
    per_source = np.zeros(2)
    for batch in batches:
        row_bytes = (np.asarray(batch["tokens"]) >= OFFSET).sum(axis=1)
        np.add.at(per_source, np.asarray(batch["source"]), row_bytes)
    share = per_source / per_source.sum()
    assert per_source.min() > 0 and abs(share[0] - 0.3) < 0.01 and abs(share[1] - 0.7) < 0.01
    # mixing state resumes exactly too
    stream = PatchedDataset({str(a): 0.3, str(b): 0.7}, config).slot_stream()
    first = take(stream, 123)
    again = PatchedDataset({str(a): 0.3, str(b): 0.7}, config)
    again.load_state_dict(stream.state())
    assert_same_batches(first + take(again.slot_stream(), 50), batches[:173])


def test_batches_are_torch_tensors_through_iter(dataset_dir):
    path, _ = dataset_dir
    ds = PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, cu_seqlens=True))
    batch = next(iter(ds))
    assert batch["tokens"].dtype == torch.int64 and batch["tokens"].shape == (2, L)
    assert batch["cu_seqlens"].dtype == torch.int32
    assert ds.batches_per_epoch() == ds.tokens_per_epoch // (2 * L) > 0


def test_elastic_resume_from_a_stateful_dataloader_state(dataset_dir):
    from torchdata.stateful_dataloader import StatefulDataLoader

    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, even_batches=False, shuffle_window=2)
    loader = StatefulDataLoader(PatchedDataset(path, config), batch_size=None, num_workers=2)
    before = take(loader, 9)
    state = torch.load(_saved(loader.state_dict()), weights_only=True)  # what a checkpoint gives back
    remainders = np.zeros(256, dtype=np.int64)
    after = run_job(path, config, 2, 0, state=[state], remainders=remainders)
    got = delivered_counts(before + [b for bs in after.values() for b in bs])
    assert len(before) == 9
    np.testing.assert_array_equal(got + remainders, expected_counts(docs))


def _saved(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_fewer_windows_than_slots_still_shares_everything(tmp_path):
    path = tmp_path / "tiny"
    docs = write_constant_docs(path, n_shards=1, docs_per_shard=12, row_group_bytes=1 << 20, seed=7)
    assert shards.read_manifest(path).totals["row_groups"] == 1
    config = DataConfig(seq_len=16, batch_size=2, epochs=1, even_batches=False)
    remainders = np.zeros(256, dtype=np.int64)
    out = run_job(path, config, 3, 2, remainders=remainders)
    assert all(len(bs) > 0 for bs in out.values())
    got = delivered_counts([b for bs in out.values() for b in bs])
    np.testing.assert_array_equal(got + remainders, expected_counts(docs))
    even = run_job(path, DataConfig(seq_len=16, batch_size=2, epochs=1), 3, 0)
    assert len({len(bs) for bs in even.values()}) == 1 and len(even[(0, 0)]) > 0


def non_pad_tokens(batches):
    return sum(int((np.asarray(b["tokens"]) != PAD_ID).sum()) for b in batches)


@pytest.mark.parametrize("pad_last", [False, True])
@pytest.mark.parametrize("world_size,workers", list(itertools.product([1, 2, 3, 4], [0, 1, 2, 3])))
def test_default_options_lose_only_the_final_partial_sequences(dataset_dir, world_size, workers, pad_last):
    """Default options (even_batches on) through a real DataLoader: every rank the same number of
    batches, and nothing lost but each slot's final partial sequence (none with pad_last)."""
    from torch.utils.data import DataLoader

    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, **({"pad_last": True} if pad_last else {}))
    per_rank, batches = [], []
    for rank in range(world_size):
        ds = PatchedDataset(path, config, rank=rank, world_size=world_size)
        got = list(DataLoader(ds, batch_size=None, num_workers=workers))
        per_rank.append(len(got))
        batches += got
    assert len(set(per_rank)) == 1 and per_rank[0] > 0
    got, want = delivered_counts(batches), expected_counts(docs)
    src = PatchedDataset(path, config).sources[0]
    num_slots = world_size * max(1, workers)
    work = all_work_tokens(loader_module.Plan(), num_slots, src.epoch, src.tokens_per_epoch, 1)
    lost = 0 if pad_last else int((work % L).sum())  # the final partial sequence of each slot
    assert lost <= num_slots * (L - 1)
    assert non_pad_tokens(batches) == src.tokens_per_epoch - lost
    assert (got <= want).all() and (want - got).sum() <= lost and got.sum() > 0
    if pad_last:
        np.testing.assert_array_equal(got, want)


def eval_run(path, world_size, seq_len=L, batch_size=2):
    from bltdata.blt.data import eval_batches
    from bltdata.blt.distributed import Runtime

    return [list(eval_batches(str(path), seq_len, batch_size, Runtime(rank=r, world_size=world_size)))
            for r in range(world_size)]


def real_rows(per_rank):
    """Every non-padding row of a run, as bytes, sorted (the sequences, whichever rank had them)."""
    rows = [bytes(np.asarray(row, dtype=np.int16)) for batches in per_rank for b in batches
            for row in np.asarray(b["tokens"]) if (row != PAD_ID).any()]
    return sorted(rows)


@pytest.mark.parametrize("world_size", [2, 3, 4, 7])
def test_eval_reads_the_same_sequences_at_any_world_size(dataset_dir, world_size):
    path, docs = dataset_dir
    single, multi = eval_run(path, 1), eval_run(path, world_size)
    assert len({len(bs) for bs in multi}) == 1  # same number of batches on every rank
    assert real_rows(multi) == real_rows(single) and len(real_rows(single)) > 0
    for run in (single, multi):
        np.testing.assert_array_equal(delivered_counts([b for bs in run for b in bs]), expected_counts(docs))
    for b in (b for bs in multi for b in bs):
        check_batch_invariants(b)


def test_eval_bits_per_byte_do_not_depend_on_world_size(dataset_dir):
    from bltdata.blt.config import debug
    from bltdata.blt.evaluate import evaluate
    from bltdata.blt.loss import bits_per_byte
    from bltdata.blt.model import BLT

    path, docs = dataset_dir
    torch.manual_seed(0)
    model = BLT(debug()).eval()
    results = {}
    for world_size in (1, 2, 3):
        # what evaluate()'s all_reduce does across ranks: add every rank's sums
        per_rank = [evaluate(model, iter(batches), "cpu") for batches in eval_run(path, world_size, seq_len=128)]
        nats, count = sum(r["nats"] for r in per_rank), sum(r["bytes"] for r in per_rank)
        results[world_size] = (bits_per_byte(nats, count), count)
    (bpb, count), = {results[1]}
    assert count >= sum(n for n, _ in docs.values()) > 0 and bpb > 0
    for world_size, (other, other_count) in results.items():
        assert other_count == count
        assert abs(other - bpb) <= 1e-6 * bpb, (world_size, other, bpb)


def cli_verify(path):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    return CliRunner().invoke(main, ["verify", str(path)])


def forge_same_size(shard_path, victim_value, candidates):
    """Rewrite a shard with one document's bytes changed (same length, valid Parquet, same file size)."""
    rows = list(shards.iter_rows(shard_path))
    forged = shard_path.with_name("forged.tmp")
    for new_value in candidates:
        writer = shards.ShardWriter(forged, patcher=PATCHER, row_group_bytes=400)
        for row in rows:
            data = row["bytes"]
            if data and data[0] == victim_value:
                data = bytes([new_value]) * len(data)
            writer.add(row["doc_id"], row["source"], data, row["patch_lengths"])
        writer.close()
        if forged.stat().st_size == shard_path.stat().st_size:  # the case a size check cannot see
            forged.replace(shard_path)
            return new_value
    raise AssertionError("no same-size forgery found")


def test_manifest_with_a_shard_entry_removed_is_refused(tmp_path):
    path = tmp_path / "data"
    write_constant_docs(path, n_shards=3, docs_per_shard=20, seed=5)
    manifest_file = path / "manifest.json"
    doc = json.loads(manifest_file.read_text())
    doc["shards"] = doc["shards"][1:]
    manifest_file.write_text(json.dumps(doc))
    with pytest.raises(ShardMismatchError, match="contradicts itself") as err:
        PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, epochs=1))
    assert str(manifest_file) in str(err.value) and "fingerprint" in str(err.value)
    result = cli_verify(path)
    assert result.exit_code == 1 and f"{manifest_file}: fingerprint does not match" in result.output
    assert str(path / "part-00000.parquet") in result.output  # on disk, not in the manifest


def test_same_size_forged_shard_is_refused(tmp_path):
    path = tmp_path / "data"
    docs = write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=6)
    victim = next(v for v, (n, _) in docs.items() if n > 20)
    spares = [v for v in range(256) if v not in docs]
    shard = next(p for p in shards.shard_files(path) if any(r["doc_id"] == f"doc-{victim}" for r in shards.iter_rows(p)))
    forge_same_size(shard, victim, spares)
    ds = PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, epochs=1, shuffle=False))
    with pytest.raises(ShardMismatchError, match="sha256") as err:
        list(ds.slot_stream())
    assert str(shard) in str(err.value)
    result = cli_verify(path)
    assert result.exit_code == 1 and f"{shard}: sha256 differs" in result.output


def test_flipped_byte_in_a_shard_is_refused_naming_it(tmp_path):
    path = tmp_path / "data"
    write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=6)
    shard = shards.shard_files(path)[0]
    chunk = next(c for c in (shards.open_shard(shard).metadata.row_group(1).column(j) for j in range(6))
                 if c.path_in_schema == "bytes")  # a column the loader reads
    raw = bytearray(shard.read_bytes())
    raw[chunk.data_page_offset + chunk.total_compressed_size - 3] ^= 0x40
    shard.write_bytes(bytes(raw))
    with pytest.raises(ShardMismatchError) as err:
        list(PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, epochs=1, shuffle=False)).slot_stream())
    assert str(shard) in str(err.value)
    result = cli_verify(path)
    assert result.exit_code == 1 and str(shard) in result.output


def test_manifest_without_row_group_sha256_is_still_read(tmp_path, caplog):
    path = tmp_path / "data"
    docs = write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=6)
    manifest_file = path / "manifest.json"
    doc = json.loads(manifest_file.read_text())
    for entry in doc["shards"]:
        del entry["row_group_sha256"]  # as written before the field existed
    manifest_file.write_text(json.dumps(doc))
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, pad_last=True)
    with caplog.at_level("WARNING"):
        batches = list(PatchedDataset(path, config).slot_stream())
    assert "row_group_sha256" in caplog.text
    np.testing.assert_array_equal(delivered_counts(batches), expected_counts(docs))


def assert_same_lists(a, b):
    assert len(a) == len(b)
    if a:
        assert_same_batches(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_resumable_loader_state_before_the_first_batch(dataset_dir, workers):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)
    full = take(ResumableLoader(PatchedDataset(path, config), num_workers=workers), 12)
    fresh = ResumableLoader(PatchedDataset(path, config), num_workers=workers)
    state = json.loads(json.dumps(fresh.state_dict()))  # before any batch
    again = ResumableLoader(PatchedDataset(path, config), num_workers=workers)
    again.load_state_dict(state)
    assert_same_batches(take(again, 12), full)
    # a loader resumed mid-run, checkpointed again before its first batch, resumes at the same place
    mid = ResumableLoader(PatchedDataset(path, config), num_workers=workers)
    first = take(mid, 5)
    resumed = ResumableLoader(PatchedDataset(path, config), num_workers=workers)
    resumed.load_state_dict(mid.state_dict())
    last = ResumableLoader(PatchedDataset(path, config), num_workers=workers)
    last.load_state_dict(resumed.state_dict())
    assert_same_batches(first + take(last, 7), full)


def _finished_pass_cases(make):
    """(what an uninterrupted loader yields next, what a loader resumed from its state yields) after a
    finite pass: once ended by StopIteration, once stopped right after its last batch."""
    loader = make()
    whole = list(loader)
    state = loader.state_dict()
    uninterrupted = list(loader)  # a second pass over the same loader
    resumed = make()
    resumed.load_state_dict(torch.load(_saved(state), weights_only=True))
    yield uninterrupted, list(resumed), len(whole)
    loader = make()
    it = iter(loader)
    take(it, len(whole))
    state = loader.state_dict()
    rest = list(it)
    resumed = make()
    resumed.load_state_dict(torch.load(_saved(state), weights_only=True))
    yield rest, list(resumed), len(whole)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_a_state_saved_at_the_end_of_a_finite_pass_resumes_as_uninterrupted(dataset_dir, workers):
    from torchdata.stateful_dataloader import StatefulDataLoader

    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=4, epochs=1, shuffle_window=2)
    loaders = {"stateful": lambda: StatefulDataLoader(PatchedDataset(path, config), batch_size=None,
                                                      num_workers=workers),
               "resumable": lambda: ResumableLoader(PatchedDataset(path, config), num_workers=workers)}
    for name, make in loaders.items():
        (next_pass, resumed_pass, n), (rest, resumed_rest, _) = _finished_pass_cases(make)
        assert n > 0 and len(next_pass) == n, name  # the uninterrupted loader starts a new pass
        assert_same_lists(resumed_pass, next_pass)
        assert rest == [] and resumed_rest == []


@pytest.mark.parametrize("new_workers", [0, 2])
def test_elastic_resume_of_stateful_dataloaders_through_the_dataset(dataset_dir, new_workers):
    """The documented elastic path: every new rank's *dataset* receives the list of all old ranks'
    StatefulDataLoader states; a new StatefulDataLoader is built around it."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    path, docs = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, epochs=1, shuffle_window=2, pad_last=True)
    before, states = [], []
    for rank in range(2):
        loader = StatefulDataLoader(PatchedDataset(path, config, rank=rank, world_size=2), batch_size=None,
                                    num_workers=2)
        before += take(loader, 4 + 3 * rank)
        states.append(torch.load(_saved(loader.state_dict()), weights_only=True))
    after, per_rank = [], []
    for rank in range(3):
        ds = PatchedDataset(path, config, rank=rank, world_size=3)
        ds.load_state_dict(states)
        got = list(StatefulDataLoader(ds, batch_size=None, num_workers=new_workers))
        per_rank.append(len(got))
        after += got
    assert len(before) == 11 and len(set(per_rank)) == 1 and per_rank[0] > 0
    np.testing.assert_array_equal(delivered_counts(before + after), expected_counts(docs))


def test_with_states_attaches_each_slot_state_and_leaves_the_dataset_plain(dataset_dir):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)
    ds = PatchedDataset(path, config)
    stream = PatchedDataset(path, config).slot_stream()
    expected = []
    for _ in range(4):
        expected.append(next(stream))
        expected[-1]["_state"] = stream.state()
    with_states = take(iter(ds.with_states()), 4)
    assert [b["_state"]["sources"][0]["position"] for b in with_states] == \
        [b["_state"]["sources"][0]["position"] for b in expected]
    assert [b["_state"] for b in with_states] == [b["_state"] for b in expected]
    assert len({b["_state"]["sources"][0]["position"] for b in with_states}) == 4  # each one moves on
    assert_same_batches([{k: v for k, v in b.items() if k != "_state"} for b in with_states],
                        [{k: v for k, v in b.items() if k != "_state"} for b in expected])
    assert all("_state" not in b for b in take(iter(ds), 4))  # the dataset's own batches stay plain


def test_a_loaded_state_names_the_first_worker_of_a_plain_dataloader(dataset_dir):
    path, _ = dataset_dir
    config = DataConfig(seq_len=L, batch_size=2, shuffle_window=2)
    loader = ResumableLoader(PatchedDataset(path, config), num_workers=2)
    take(loader, 3)  # workers 0, 1, 0: worker 1 comes next
    ds = PatchedDataset(path, config)
    assert ds.resume_first_worker(2) == 0  # nothing loaded
    ds.load_state_dict(loader.state_dict())
    assert ds.resume_first_worker(2) == 1
    assert ds.resume_first_worker(3) == 0  # saved by a loader with other workers: no shift


def test_a_shard_of_another_size_is_refused_with_the_message_verify_gives(tmp_path):
    path = tmp_path / "data"
    write_constant_docs(path, n_shards=2, docs_per_shard=20, seed=3)
    shard = shards.shard_files(path)[1]
    listed = shards.read_manifest(path).shards[1].size
    with open(shard, "ab") as f:
        f.write(b"\0" * 5)
    message = f"size {listed + 5} differs from the manifest's {listed} (truncated or replaced?)"
    (problem,) = shards.validate(path)
    assert problem.file == str(shard) and problem.message == message
    with pytest.raises(ShardMismatchError) as err:
        list(PatchedDataset(path, DataConfig(seq_len=L, batch_size=2, epochs=1, shuffle=False)).slot_stream())
    assert str(err.value).startswith(f"{shard}: {message}")
