"""The batched engine: entropies are a property of the document alone (docs/design.md §2)."""
import math

import numpy as np
import pytest
import torch

from bltdata.entropy.engine import EntropyEngine, bucket_length, entropies_from_logits, plan_batches
from bltdata.entropy.model import EntropyModel, tiny
from bltdata.ids import EOS_ID, bytes_to_ids

TOLERANCE = 1e-4  # nats, fp32 on CPU


@pytest.fixture(scope="module")
def model():
    model = EntropyModel(tiny()).eval()
    model.reset_parameters(seed=1)
    return model


def _docs(lengths, seed=0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    words = [b"the ", b"data ", b"def ", b"(x): ", b"return ", b"\n    ", b"patch", b"42", b"\xc3\xa9"]
    docs = []
    for n in lengths:
        text = b"".join(words[i] for i in rng.integers(0, len(words), n // 2 + 1))
        docs.append(text[:n])
    return docs


def _fp32_engine(model, **options) -> EntropyEngine:
    """The exactness tests pin fp32: the default precision is the device's (bf16 on a bf16 CPU)."""
    return EntropyEngine(model, precision="fp32", **options)


def _alone(model, doc: bytes) -> np.ndarray:
    """Reference: the whole document in one forward pass, no batching, no chunking."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(bytes_to_ids(doc))[None])
    return entropies_from_logits(logits)[0].numpy()


WINDOW = tiny().window
LENGTHS = [0, 1, 2, 7, WINDOW - 1, WINDOW, WINDOW + 1, 150, 333, 20 * WINDOW + 17, 90, 3]


@pytest.fixture(scope="module")
def reference(model):
    docs = _docs(LENGTHS)
    return docs, [_alone(model, d) for d in docs]


@pytest.mark.parametrize("batch_bytes,chunk_len", [(1 << 20, 1 << 20), (4096, 1 << 20), (512, 64), (2048, 100),
                                                   (1000, 33), (300, WINDOW - 1), (1 << 16, 1)])
def test_batched_chunked_equals_alone(model, reference, batch_bytes, chunk_len):
    docs, expected = reference
    engine = _fp32_engine(model, batch_bytes=batch_bytes, chunk_len=chunk_len)
    got = engine.score(docs)
    assert [len(h) for h in got] == [len(d) + 1 for d in docs]
    worst = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    assert worst <= TOLERANCE
    assert engine.stats.documents == len(docs) and engine.stats.batches >= 1


def test_long_document_20x_window(model, reference):
    docs, expected = reference
    long_doc, want = docs[LENGTHS.index(20 * WINDOW + 17)], expected[LENGTHS.index(20 * WINDOW + 17)]
    assert len(long_doc) > 20 * WINDOW
    for chunk_len in (7, WINDOW, 3 * WINDOW + 5, 512):
        got = _fp32_engine(model, chunk_len=chunk_len).score([long_doc])[0]
        assert np.abs(got - want).max() <= TOLERANCE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_result_does_not_depend_on_batch_mix(model, reference, seed):
    """A document scores the same whatever other documents share its batch, in any order."""
    docs, expected = reference
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    extra = _docs(rng.integers(0, 500, 5).tolist(), seed=seed + 10)
    mixed = [docs[i] for i in order] + extra
    got = _fp32_engine(model, batch_bytes=int(rng.integers(200, 3000)), chunk_len=int(rng.integers(20, 300))).score(mixed)
    checked = 0
    for position, index in enumerate(order):
        assert np.abs(got[position] - expected[index]).max() <= TOLERANCE
        checked += 1
    assert checked == len(docs)


def test_empty_document_gives_one_value(model):
    assert _fp32_engine(model).score([]) == []
    got = _fp32_engine(model).score([b"", b"a", b""])
    assert [len(h) for h in got] == [1, 2, 1]
    assert got[0].dtype == np.float32
    assert np.array_equal(got[0], got[2])


def test_entropies_are_in_range(model, reference):
    docs, expected = reference
    values = np.concatenate(expected)
    assert values.size > 0
    assert (values >= 0).all() and (values <= math.log(260) + 1e-4).all()


def test_nll_matches_direct_cross_entropy(model):
    doc = _docs([200])[0]
    ids = torch.from_numpy(bytes_to_ids(doc, eos=True))
    with torch.inference_mode():
        logits = model(ids[None, :-1])[0]
    want = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none").numpy()
    got = _fp32_engine(model, chunk_len=50).nll([doc])[0]
    assert ids[-1] == EOS_ID and len(got) == len(doc) + 1
    assert np.abs(got - want).max() <= TOLERANCE


def test_plan_batches_respects_budget_and_covers_every_document():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 3000, 200).tolist()
    batches = plan_batches(lengths, batch_bytes=4096, chunk_len=1024)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(200))
    for batch in batches:
        batch_lengths = [lengths[i] for i in batch]
        assert batch_lengths == sorted(batch_lengths)
        assert len(batch) == 1 or len(batch) * min(max(batch_lengths), 1024) <= 4096


def test_stats_report_padding(model):
    engine = _fp32_engine(model, batch_bytes=1 << 20, chunk_len=1 << 20)
    engine.score([b"a" * 9, b"b" * 99])  # 10 and 100 positions, padded to buckets 16 and 104
    assert engine.stats.tokens == 110 and engine.stats.padded_tokens == 16 + 104
    assert engine.stats.padding_waste == pytest.approx(1 - 110 / 120)
    assert engine.stats.bytes == 108 and engine.stats.to_dict()["padding_waste"] == pytest.approx(1 - 110 / 120)
    assert engine.stats.batches == 2  # one bucket per batch
    engine = _fp32_engine(model, batch_bytes=1 << 20, chunk_len=50)
    engine.score([b"a" * 9, b"b" * 99])  # steps of 50 over bucket 104: 50, 50, then only padding is left
    assert engine.stats.padded_tokens == 16 + 50 + 50 and engine.stats.steps == 3


def test_bucket_lengths_bound_padding():
    lengths = np.arange(1, 20000)
    buckets = np.array([bucket_length(int(n)) for n in lengths])
    assert (buckets >= lengths).all() and (buckets % 8 == 0).all()
    assert ((buckets - lengths)[lengths >= 64] / lengths[lengths >= 64]).max() <= 0.125
    assert (buckets - lengths).max() > 0


def test_entropies_are_bit_identical_across_batchings(model):
    rng = np.random.default_rng(7)
    docs = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 700, size=60)]
    reference = _fp32_engine(model, batch_bytes=1 << 20).score(docs)
    assert len(reference) == 60
    for budget in (64, 1000, 5000):
        shuffled = rng.permutation(len(docs))
        scored = _fp32_engine(model, batch_bytes=budget).score([docs[i] for i in shuffled])
        for position, index in enumerate(shuffled):
            np.testing.assert_array_equal(scored[position], reference[index])
    for doc, expected in zip(docs[:10], reference[:10]):
        np.testing.assert_array_equal(_fp32_engine(model).score([doc])[0], expected)


def test_engine_rejects_bad_settings(model):
    with pytest.raises(ValueError):
        _fp32_engine(model, batch_bytes=0)
    with pytest.raises(ValueError):
        _fp32_engine(model, chunk_len=0)
