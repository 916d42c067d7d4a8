"""Packing: document tokens and patches, cutting into sequences, batches (pure numpy, no files)."""
import numpy as np
import pytest

from bltdata.data.packing import (Fragment, collate, cut_sequences, document_patches, document_tokens,
                                  slice_patches)
from bltdata.ids import BOS_ID, EOS_ID, bytes_to_ids


def random_docs(n, seed=0, max_len=50):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        size = 0 if i % 5 == 3 else int(rng.integers(1, max_len))
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        cuts = np.sort(rng.choice(np.arange(1, size), size=min(size - 1, size // 3), replace=False)) if size > 1 else []
        lengths = np.diff(np.concatenate([[0], cuts, [size]])).astype(np.int32) if size else np.zeros(0, np.int32)
        docs.append((data, lengths))
    return docs


def flatten(docs):
    data = np.frombuffer(b"".join(d for d, _ in docs), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in docs])]).astype(np.int64)
    values = np.concatenate([p for _, p in docs]).astype(np.int32)
    poffsets = np.concatenate([[0], np.cumsum([len(p) for _, p in docs])]).astype(np.int64)
    return data, offsets, values, poffsets


def reference_patches(docs):
    """Per document: [1] + patches, EOS added to the last patch; an empty document is [1, 1]."""
    out = []
    for data, lengths in docs:
        p = [1] + [int(x) for x in lengths]
        if len(lengths):
            p[-1] += 1
        else:
            p.append(1)
        out.extend(p)
    return np.array(out)


def test_document_tokens_match_ids_module():
    docs = random_docs(40)
    data, offsets, _, _ = flatten(docs)
    expected = np.concatenate([bytes_to_ids(d, bos=True, eos=True) for d, _ in docs])
    got = document_tokens(data, offsets)
    assert len(got) == sum(len(d) + 2 for d, _ in docs) > 0
    np.testing.assert_array_equal(got.astype(np.int64), expected)


def test_document_patches_bos_alone_eos_on_last_patch():
    docs = random_docs(40, seed=1)
    _, _, values, poffsets = flatten(docs)
    got = document_patches(values, poffsets)
    np.testing.assert_array_equal(got, reference_patches(docs))
    assert got.sum() == sum(len(d) + 2 for d, _ in docs)


@pytest.mark.parametrize("start,stop", [(0, 7), (3, 4), (5, 40), (0, 1), (17, 17 + 1)])
def test_slice_patches_cuts_only_at_the_ends(start, stop):
    patches = np.array([1, 4, 3, 1, 6, 2, 9, 5, 1, 8], dtype=np.int32)
    got = slice_patches(patches, start, stop)
    assert got.sum() == stop - start and (got >= 1).all()
    bounds = set(np.cumsum(patches).tolist())
    inner = set((start + np.cumsum(got)[:-1]).tolist())
    assert inner <= bounds  # no new boundary inside the slice


def test_cut_sequences_splits_patches_only_at_sequence_ends():
    docs = random_docs(60, seed=2)
    data, offsets, values, poffsets = flatten(docs)
    frag = Fragment.from_documents(data, offsets, values, poffsets, skip=0, stop=len(data) + 2 * len(docs),
                                   start=1000, seam=False)
    L = 16
    chunk, rest = cut_sequences(frag, L, piece_start=1000, carried=0)
    assert len(chunk) == len(frag) // L > 0 and len(rest) == len(frag) % L
    rows = [chunk.patches[chunk.row_offsets[k]:chunk.row_offsets[k + 1]] for k in range(len(chunk))]
    assert all(r.sum() == L for r in rows)
    np.testing.assert_array_equal(chunk.positions, 1000 + np.arange(len(chunk)) * L)
    assert rest.start == 1000 + len(chunk) * L
    # boundaries of the cut stream = original boundaries + sequence ends, nothing else
    all_patches = np.concatenate(rows + [rest.patches])
    original = set(np.cumsum(reference_patches(docs)).tolist())
    cut_ends = set(range(L, len(chunk) * L + 1, L))
    assert set(np.cumsum(all_patches).tolist()) == original | cut_ends


def test_cut_sequences_with_a_carried_remainder():
    docs = random_docs(30, seed=3)
    data, offsets, values, poffsets = flatten(docs)
    total = len(data) + 2 * len(docs)
    cut = int(offsets[7] + 2 * 7)  # pieces of a slot's stream meet at document (window) boundaries
    whole = Fragment.from_documents(data, offsets, values, poffsets, skip=0, stop=total, start=0, seam=False)
    a = Fragment.from_documents(data, offsets, values, poffsets, skip=0, stop=cut, start=0, seam=False)
    L = 32
    c1, rest = cut_sequences(a, L, piece_start=0, carried=0)
    b = Fragment.from_documents(data, offsets, values, poffsets, skip=cut, stop=total, start=cut, seam=False,
                                prefix=rest)
    assert b.start == rest.start and len(b) == len(rest) + total - cut
    c2, rest2 = cut_sequences(b, L, piece_start=cut, carried=len(rest))
    ref, ref_rest = cut_sequences(whole, L, piece_start=0, carried=0)
    np.testing.assert_array_equal(np.concatenate([c1.tokens, c2.tokens]), ref.tokens)
    np.testing.assert_array_equal(np.concatenate([c1.positions, c2.positions]), ref.positions)
    np.testing.assert_array_equal(np.concatenate([c1.patches, c2.patches]), ref.patches)
    assert rest2.start == ref_rest.start and len(rest2) == len(ref_rest)


def test_collate_layout():
    docs = random_docs(50, seed=4)
    data, offsets, values, poffsets = flatten(docs)
    total = len(data) + 2 * len(docs)
    frag = Fragment.from_documents(data, offsets, values, poffsets, skip=5, stop=total, start=5, seam=True)
    chunk, _ = cut_sequences(frag, 24, piece_start=5, carried=0)
    batch = collate([(chunk, k) for k in range(4)], cu_seqlens=True)
    tokens, patches, doc_ids = batch["tokens"], batch["patch_lengths"], batch["doc_ids"]
    assert tokens.dtype == patches.dtype == doc_ids.dtype == np.int64
    assert tokens.shape == doc_ids.shape == (4, 24)
    np.testing.assert_array_equal(patches.sum(axis=1), [24] * 4)
    bos = tokens == BOS_ID
    bos[:, 0] = True
    np.testing.assert_array_equal(doc_ids, np.cumsum(bos, axis=1) - 1)
    cu = batch["cu_seqlens"]
    assert cu[0] == 0 and cu[-1] == tokens.size and (np.diff(cu) > 0).all()
    assert (tokens == EOS_ID).sum() > 0
    with pytest.raises(ValueError, match="max_patches"):
        collate([(chunk, 0)], max_patches=1)
