"""Tests for bltdata.patching: every mode against a plain-Python reading of docs/design.md §3."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bltdata.patching import (
    DEFAULT_THRESHOLD,
    MODES,
    PatcherConfig,
    calibrate_threshold,
    patch_batch,
    patch_lengths,
)

# ---------------------------------------------------------------------------------------
# The obviously-correct reference: docs/design.md §3 read literally, one byte at a time.


def space_like(byte: int) -> bool:
    return byte >= 0xC0 or (byte < 0x80 and not chr(byte).isalnum())


def starts_patch(config: PatcherConfig, k: int, data: bytes, h) -> bool:
    f32 = np.float32
    theta = f32(config.threshold)
    if config.mode == "entropy" and config.threshold_add is None:
        return k == 0 or f32(h[k]) > theta
    if config.mode == "entropy":
        diff = f32(h[k]) - f32(h[k - 1]) if k else None
        return k <= 1 or (f32(h[k]) > theta and diff > f32(config.threshold_add))
    if config.mode == "monotonic":
        return k <= 1 or f32(h[k]) - f32(h[k - 1]) > theta
    if config.mode == "space":
        before_previous_is_space = space_like(data[k - 2]) if k >= 2 else True  # BOS
        return k == 0 or (space_like(data[k - 1]) and not before_previous_is_space)
    if config.mode == "static":
        return k % config.patch_size == 0
    return True  # byte


def reference_lengths(config: PatcherConfig, data: bytes, h=None) -> list[int]:
    n = len(data)
    starts = [k for k in range(n) if starts_patch(config, k, data, h)]
    lengths = [end - start for start, end in zip(starts, starts[1:] + [n])]
    limit = config.max_patch_length
    if limit is None:
        return lengths
    split = []
    for length in lengths:
        split += [limit] * ((length - 1) // limit) + [length - limit * ((length - 1) // limit)]
    return split


def flatten(docs: list[bytes], entropies: list[np.ndarray]):
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    data = np.frombuffer(b"".join(docs), np.uint8)
    flat_h = np.concatenate(entropies + [np.zeros(0, np.float32)]).astype(np.float32)
    return offsets, data, flat_h


# ---------------------------------------------------------------------------------------
# Hand-made cases, one or more per mode.

H = np.array


@pytest.mark.parametrize("config, data, h, expected", [
    # entropy: starts at k = 0 and where H > θ (strictly: H == θ does not start one)
    (PatcherConfig(threshold=1.0), b"abcdefg", H([5, 0, 0, 2, 0, 2, 2]), [3, 2, 1, 1]),
    (PatcherConfig(threshold=1.0), b"abc", H([0, 1.0, 1.0]), [3]),
    (PatcherConfig(threshold=1.0, max_patch_length=4), b"x" * 10, H([0] * 10), [4, 4, 2]),
    # entropy + threshold_add: k <= 1 always; k = 2 starts one here (the reference's quirk
    # of never starting at k = 2 is not copied)
    (PatcherConfig(threshold=2.0, threshold_add=1.0), b"abcdef", H([0, 0, 3, 3.5, 1, 4]),
     [1, 1, 3, 1]),
    # monotonic: k <= 1 always, then H[k] - H[k-1] > θ
    (PatcherConfig(mode="monotonic", threshold=1.0), b"abcdefg", H([9, 0, 0, 2, 2.5, 0, 3]),
     [1, 2, 3, 1]),
    (PatcherConfig(mode="monotonic", threshold=1.0), b"a", H([9]), [1]),
    (PatcherConfig(mode="monotonic", threshold=1.0), b"ab", H([0, 0]), [1, 1]),
    # space: after a space-like byte that follows a non-space-like one
    (PatcherConfig(mode="space"), b"hello world, foo", None, [6, 6, 4]),
    (PatcherConfig(mode="space"), b" a", None, [2]),           # k = 1: BOS is space-like
    (PatcherConfig(mode="space"), b"a b", None, [2, 1]),
    (PatcherConfig(mode="space"), "aé b".encode(), None, [2, 2, 1]),  # 0xC3 is a lead byte
    (PatcherConfig(mode="space"), b"a9Z_q", None, [4, 1]),      # '_' is not alphanumeric
    (PatcherConfig(mode="space", max_patch_length=2), b"hello world", None, [2, 2, 2, 2, 2, 1]),
    # static and byte
    (PatcherConfig(mode="static", patch_size=4), b"x" * 10, None, [4, 4, 2]),
    (PatcherConfig(mode="static", patch_size=3, max_patch_length=2), b"x" * 8, None,
     [2, 1, 2, 1, 2]),
    (PatcherConfig(mode="byte"), b"abc", None, [1, 1, 1]),
])
def test_hand_made_cases(config, data, h, expected):
    got = patch_lengths(config, data, h)
    assert got.dtype == np.int32
    assert got.tolist() == expected
    assert reference_lengths(config, data, h) == expected


def test_threshold_and_entropies_compare_as_float32():
    """θ = 0.1 is cast to float32 first, so H = float32(0.1) is a tie, not above θ."""
    config = PatcherConfig(threshold=0.1)
    tie = np.float32(0.1)
    above = np.nextafter(tie, np.float32(1))
    assert float(tie) > 0.1  # in float64 the tie would (wrongly) start a patch
    assert patch_lengths(config, b"ab", np.array([0, tie], np.float64)).tolist() == [2]
    assert patch_lengths(config, b"ab", np.array([0, above], np.float32)).tolist() == [1, 1]


def test_monotonic_difference_is_rounded_to_float32():
    h = np.array([0, 0.3, 0.4], np.float32)
    diff = np.float32(h[2] - h[1])
    at_diff = PatcherConfig(mode="monotonic", threshold=float(diff))
    assert patch_lengths(at_diff, b"abc", h).tolist() == [1, 2]
    below = PatcherConfig(mode="monotonic", threshold=float(np.nextafter(diff, np.float32(0))))
    assert patch_lengths(below, b"abc", h).tolist() == [1, 1, 1]


def test_nan_entropies_never_start_a_patch():
    h = np.array([np.nan, np.nan, 5, np.nan, 5], np.float32)
    assert patch_lengths(PatcherConfig(threshold=1.0), b"abcde", h).tolist() == [2, 2, 1]
    monotonic = PatcherConfig(mode="monotonic", threshold=1.0)
    assert patch_lengths(monotonic, b"abcde", h).tolist() == [1, 4]


@pytest.mark.parametrize("threshold", [-1.0, 0.3, 1.5, 100.0])  # every byte ... no byte
def test_long_documents_match_reference(threshold):
    rng = np.random.default_rng(11)
    n = 5000  # many 64-byte blocks, plus a partial one
    h = rng.gamma(2.0, 0.7, n).astype(np.float32)
    data = rng.choice(np.frombuffer(b"ab .\xc3", np.uint8), n).tobytes()
    checked = 0
    for config in [PatcherConfig(threshold=threshold),
                   PatcherConfig(mode="monotonic", threshold=threshold),
                   PatcherConfig(threshold=threshold, threshold_add=0.2, max_patch_length=5),
                   PatcherConfig(mode="space", max_patch_length=3)]:
        assert patch_lengths(config, data, h).tolist() == reference_lengths(config, data, h)
        checked += 1
    assert checked == 4


def test_space_like_bytes_match_design():
    data = bytes(range(256))
    table = [space_like(b) for b in data]
    assert sum(table) == 128 - 62 + 64  # ASCII minus [0-9A-Za-z], plus lead bytes 0xC0..0xFF
    # A byte followed by 'a' right after 'x' starts a patch at 'a' iff the byte is space-like.
    for byte in range(256):
        got = patch_lengths(PatcherConfig(mode="space"), bytes([ord("x"), byte, ord("a")]))
        assert got.tolist() == ([2, 1] if table[byte] else [3]), byte


def test_empty_documents_have_no_patches():
    docs = [b"", b"abc", b"", b""]
    offsets, data, h = flatten(docs, [np.ones(len(d), np.float32) * 9 for d in docs])
    for mode in MODES:
        config = PatcherConfig(mode=mode)
        lengths, patch_offsets = patch_batch(config, offsets, entropies=h, data=data)
        assert patch_offsets.tolist()[:2] == [0, 0] and patch_offsets[-1] == lengths.size
        assert np.diff(patch_offsets).tolist()[2:] == [0, 0]
        assert lengths.sum() == 3
    assert patch_lengths(PatcherConfig(), b"", np.zeros(0)).size == 0
    no_docs = np.zeros(1, np.int64)
    lengths, patch_offsets = patch_batch(PatcherConfig(), no_docs, entropies=np.zeros(0))
    assert lengths.size == 0 and patch_offsets.tolist() == [0]


def test_patch_lengths_accepts_engine_output_with_final_entropy():
    h = np.array([0, 5, 0, 0, 5], np.float32)
    config = PatcherConfig(threshold=1.0)
    with_final = patch_lengths(config, b"abcd", h)
    assert with_final.tolist() == patch_lengths(config, b"abcd", h[:4]).tolist() == [1, 3]
    with pytest.raises(ValueError, match="needs 4 or 5 entropies"):
        patch_lengths(config, b"abcd", h[:3])
    with pytest.raises(TypeError, match="not str"):
        patch_lengths(config, "abcd", h)


def test_batch_input_errors():
    offsets = np.array([0, 3, 5])
    with pytest.raises(ValueError, match="needs entropies"):
        patch_batch(PatcherConfig(), offsets)
    with pytest.raises(ValueError, match="needs the document bytes"):
        patch_batch(PatcherConfig(mode="space"), offsets)
    with pytest.raises(ValueError, match="entropies must be a flat array of offsets"):
        patch_batch(PatcherConfig(), offsets, entropies=np.zeros(4))
    with pytest.raises(ValueError, match="non-decreasing"):
        patch_batch(PatcherConfig(), np.array([0, 3, 2]), entropies=np.zeros(2))
    with pytest.raises(ValueError, match="start at 0"):
        patch_batch(PatcherConfig(), np.array([1, 3]), entropies=np.zeros(3))


# ---------------------------------------------------------------------------------------
# Property tests: random batches, every mode, against the reference.

GRID = 0.25  # entropies and thresholds on a coarse grid make ties (H == θ, ΔH == θ) common


@st.composite
def patch_cases(draw):
    mode = draw(st.sampled_from(MODES))
    threshold = draw(st.integers(-8, 16)) * GRID
    threshold_add = None
    if mode == "entropy" and draw(st.booleans()):
        threshold_add = draw(st.integers(-8, 8)) * GRID
    config = PatcherConfig(
        mode=mode, threshold=threshold, threshold_add=threshold_add,
        max_patch_length=draw(st.none() | st.integers(1, 12)), patch_size=draw(st.integers(1, 9)))
    sizes = draw(st.lists(st.integers(0, 300) | st.integers(0, 4), min_size=1, max_size=6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    alphabet = np.frombuffer(b"aZ09 \n.,_-\x7f\x80\xa9\xc3\xe2\xff", np.uint8)
    docs = [rng.choice(alphabet, size).tobytes() for size in sizes]
    if draw(st.booleans()):
        entropies = [(rng.integers(0, 17, size) * GRID).astype(np.float32) for size in sizes]
    else:
        entropies = [rng.gamma(2.0, 0.7, size).astype(np.float32) for size in sizes]
    return config, docs, entropies


@settings(max_examples=300, deadline=None)
@given(patch_cases())
def test_batch_matches_reference_and_invariants(case):
    config, docs, entropies = case
    offsets, data, flat_h = flatten(docs, entropies)
    lengths, patch_offsets = patch_batch(config, offsets, entropies=flat_h, data=data)
    assert lengths.dtype == np.int32 and patch_offsets.dtype == np.int64
    assert patch_offsets.shape == (len(docs) + 1,) and patch_offsets[-1] == lengths.size
    for d, (doc, h) in enumerate(zip(docs, entropies)):
        got = lengths[patch_offsets[d]:patch_offsets[d + 1]]
        assert got.tolist() == reference_lengths(config, doc, h)
        assert got.sum() == len(doc)
        assert (got >= 1).all()
        if config.max_patch_length is not None:
            assert (got <= config.max_patch_length).all()
        assert got.tolist() == patch_lengths(config, doc, h).tolist()  # batched == per doc


def test_large_random_batch_matches_per_document():
    rng = np.random.default_rng(7)
    sizes = rng.lognormal(np.log(300), 1.0, 400).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    flat_h = rng.gamma(2.0, 0.7, offsets[-1]).astype(np.float32)
    data = rng.integers(0, 256, offsets[-1], dtype=np.uint8)
    checked = 0
    for config in [PatcherConfig(),
                   PatcherConfig(mode="monotonic", threshold=0.5, max_patch_length=6),
                   PatcherConfig(threshold=1.0, threshold_add=0.1), PatcherConfig(mode="space")]:
        lengths, patch_offsets = patch_batch(config, offsets, entropies=flat_h, data=data)
        assert lengths.sum() == offsets[-1]
        for d in range(0, len(sizes), 37):
            lo, hi = offsets[d], offsets[d + 1]
            expected = patch_lengths(config, data[lo:hi].tobytes(), flat_h[lo:hi])
            assert lengths[patch_offsets[d]:patch_offsets[d + 1]].tolist() == expected.tolist()
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------------------------------
# Threshold calibration


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(3)
    sizes = rng.lognormal(np.log(500), 1.0, 200).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return rng.gamma(2.0, 0.7, offsets[-1]).astype(np.float32), offsets


def mean_patch(config, entropies, offsets) -> float:
    lengths, _ = patch_batch(config, offsets, entropies=entropies)
    return lengths.sum() / lengths.size


@pytest.mark.parametrize("config", [
    PatcherConfig(),
    PatcherConfig(max_patch_length=8),
    PatcherConfig(threshold_add=0.05),
    PatcherConfig(mode="monotonic"),
])
def test_calibration_hits_target_and_is_monotone(sample, config):
    entropies, offsets = sample
    thresholds = []
    for target in [2.5, 3.0, 4.5, 6.0]:
        theta = calibrate_threshold(entropies, offsets, target, config)
        assert np.float32(theta) == theta  # a float32 value, exactly
        achieved = mean_patch(replace(config, threshold=theta), entropies, offsets)
        assert achieved == pytest.approx(target, rel=0.01)
        thresholds.append(theta)
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)


def test_calibration_returns_the_closest_step(sample):
    entropies, offsets = sample
    config = PatcherConfig()
    theta = calibrate_threshold(entropies, offsets, 3.0, config)
    here = mean_patch(replace(config, threshold=theta), entropies, offsets)
    for neighbour in (np.nextafter(np.float32(theta), np.float32(-np.inf)),
                      np.nextafter(np.float32(theta), np.float32(np.inf))):
        other = mean_patch(replace(config, threshold=float(neighbour)), entropies, offsets)
        assert abs(here - 3.0) <= abs(other - 3.0)


def test_calibration_rejects_unreachable_targets(sample):
    entropies, offsets = sample
    with pytest.raises(ValueError, match="unreachable"):
        calibrate_threshold(entropies, offsets, 0.5, PatcherConfig())
    with pytest.raises(ValueError, match=r"unreachable.*max_patch_length=4"):
        calibrate_threshold(entropies, offsets, 5.0, PatcherConfig(max_patch_length=4))
    with pytest.raises(ValueError, match="modes"):
        calibrate_threshold(entropies, offsets, 4.0, PatcherConfig(mode="space"))
    with pytest.raises(ValueError, match="positive"):
        calibrate_threshold(entropies, offsets, math.nan, PatcherConfig())
    with pytest.raises(ValueError, match="empty sample"):
        calibrate_threshold(np.zeros(0), np.zeros(3, np.int64), 4.0, PatcherConfig())


# ---------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "entropie"}, "unknown patching mode 'entropie'"),
    ({"mode": "monotonic", "threshold_add": 0.1}, "threshold_add applies only to mode 'entropy'"),
    ({"max_patch_length": 0}, "max_patch_length must be an integer >= 1"),
    ({"max_patch_length": 2.5}, "max_patch_length must be an integer >= 1"),
    ({"max_patch_length": True}, "max_patch_length must be an integer >= 1"),
    ({"patch_size": 0}, "patch_size must be an integer >= 1"),
    ({"threshold": "1.3"}, "threshold must be a number"),
    ({"threshold": math.nan}, "threshold must be a number"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatcherConfig(**kwargs)


def test_config_dict_round_trip_and_properties():
    config = PatcherConfig(mode="entropy", threshold=1.5, threshold_add=0.2, max_patch_length=16)
    assert config.to_dict() == {"mode": "entropy", "threshold": 1.5, "threshold_add": 0.2,
                                "max_patch_length": 16, "patch_size": 4}
    assert PatcherConfig.from_dict(config.to_dict()) == config
    assert PatcherConfig.from_dict({}) == PatcherConfig()
    assert PatcherConfig().threshold == DEFAULT_THRESHOLD
    with pytest.raises(ValueError, match="unknown patcher config keys"):
        PatcherConfig.from_dict({"mode": "byte", "size": 3})
    needs = {mode: PatcherConfig(mode=mode).needs_entropies for mode in MODES}
    assert needs == {"entropy": True, "monotonic": True,
                     "space": False, "static": False, "byte": False}
