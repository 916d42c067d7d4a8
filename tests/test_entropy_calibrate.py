"""Direct tests of `bltdata.entropy.calibrate`: the sample, θ for a target patch size on synthetic
entropies (hand-computed patch counts), and the shared rule that picks θ."""
import json

import numpy as np
import pytest

from bltdata.entropy.calibrate import (MISMATCH_FACTOR, ThresholdChoice, calibrate_from_documents, choose_threshold,
                                       flat_entropies, sample_documents)
from bltdata.patch_config import DEFAULT_THRESHOLD, PatcherConfig

# Entropy mode starts a patch at byte 0 and wherever H[k] > θ. With H = these values (the engine
# below scores a byte as its own value) a 12-byte document gets, for θ in
#   [3, inf): 1 patch (mean 12)   [2, 3): 3 (k = 0, 5, 11; mean 4)   [1, 2): 5 (mean 2.4)
#   [0, 1): 7 (mean 12/7)         below 0: 12 (mean 1)
DOC = bytes([0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0, 3])


class ByteValueEngine:
    """Stands in for EntropyEngine: H[k] is byte k's value; H[n] (after the last byte) is 9."""

    def __init__(self):
        self.scored = []

    def score(self, docs):
        self.scored.append(list(docs))
        return [np.concatenate([np.frombuffer(d, np.uint8), [9]]).astype(np.float32) for d in docs]


def test_sample_documents_takes_the_first_bytes_and_skips_empty_documents():
    docs = [b"abc", b"", b"defgh", b"ij"]
    assert sample_documents(docs, 6) == [b"abc", b"def"]  # the last one cut to fit
    assert sample_documents(docs, 3) == [b"abc"]
    assert sample_documents(docs, 100) == [b"abc", b"defgh", b"ij"]
    assert sample_documents(docs, 0) == []
    assert sample_documents(iter(docs), 8) == [b"abc", b"defgh"]  # any iterable, read once


def test_flat_entropies_drops_each_documents_last_value():
    flat, offsets = flat_entropies([np.array([1.0, 2.0, 9.0]), np.array([3.0, 9.0]), np.array([9.0])])
    np.testing.assert_array_equal(flat, np.array([1, 2, 3], np.float32))
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(offsets, [0, 2, 3, 3])
    flat, offsets = flat_entropies([])
    assert flat.shape == (0,) and offsets.tolist() == [0]


@pytest.mark.parametrize("target, patches, lo, hi", [
    (12.0, 2, 3.0, np.inf),   # two documents, one patch each
    (4.0, 6, 2.0, 3.0),
    (2.4, 10, 1.0, 2.0),
    (12 / 7, 14, 0.0, 1.0),
    (1.0, 24, -np.inf, 0.0),
])
def test_theta_reaches_each_reachable_mean_exactly(target, patches, lo, hi):
    theta, summary = calibrate_from_documents(ByteValueEngine(), [DOC, b"", DOC], target)
    assert lo <= theta < hi
    assert summary == {"documents": 2, "bytes": 24, "patches": patches, "mean_patch": 24 / patches,
                       "threshold": theta}
    assert summary["mean_patch"] == pytest.approx(target)


def test_a_target_between_two_reachable_means_gets_the_closer_one():
    theta, summary = calibrate_from_documents(ByteValueEngine(), [DOC], 3.0)  # 2.4 is 0.6 away, 4 is 1 away
    assert 1.0 <= theta < 2.0 and summary["patches"] == 5
    theta, summary = calibrate_from_documents(ByteValueEngine(), [DOC], 3.5)  # 4 is 0.5 away, 2.4 is 1.1
    assert 2.0 <= theta < 3.0 and summary["patches"] == 3


def test_theta_is_monotone_in_the_target():
    targets = [1.0, 1.3, 12 / 7, 2.0, 2.4, 3.0, 3.5, 4.0, 6.0, 9.0, 12.0]
    thetas = [calibrate_from_documents(ByteValueEngine(), [DOC], t)[0] for t in targets]
    assert thetas == sorted(thetas)
    assert thetas[0] < 0 <= thetas[3] and thetas[-1] >= 3  # spans every step


def test_calibration_reads_only_max_bytes_of_the_documents():
    engine = ByteValueEngine()
    theta, summary = calibrate_from_documents(engine, [DOC, DOC], 3.0, max_bytes=6)
    assert engine.scored == [[DOC[:6]]]
    assert summary["documents"] == 1 and summary["bytes"] == 6
    assert 2.0 <= theta < 3.0 and summary["patches"] == 2  # [0 1 0 2 0 | 3]: starts at 0 and 5


def test_monotonic_mode_calibrates_on_entropy_differences():
    # monotonic: a patch starts at k <= 1 or where H[k] - H[k-1] > θ; the differences of DOC from k = 2
    # are -1 2 -2 3 -3 1 -1 2 -2 3, so θ in [2, 3) leaves 4 patches (k = 0, 1, 5, 11): mean 3
    theta, summary = calibrate_from_documents(ByteValueEngine(), [DOC], 3.0, PatcherConfig(mode="monotonic"))
    assert 2.0 <= theta < 3.0 and summary["patches"] == 4
    theta, summary = calibrate_from_documents(ByteValueEngine(), [DOC], 6.0, PatcherConfig(mode="monotonic"))
    assert theta >= 3.0 and summary["patches"] == 2


def test_unreachable_targets_and_empty_samples_are_refused():
    with pytest.raises(ValueError, match="unreachable .* between 1.0000 and 12.0000"):
        calibrate_from_documents(ByteValueEngine(), [DOC], 13.0)
    with pytest.raises(ValueError, match="unreachable"):
        calibrate_from_documents(ByteValueEngine(), [DOC], 0.5)
    with pytest.raises(ValueError, match="no non-empty documents"):
        calibrate_from_documents(ByteValueEngine(), [b"", b""], 4.0)
    with pytest.raises(ValueError, match="modes"):
        calibrate_from_documents(ByteValueEngine(), [DOC], 4.0, PatcherConfig(mode="space"))


def test_threshold_choice_describes_itself_and_warns_far_from_its_target():
    assert ThresholdChoice(1.5, "--threshold").describe() == "θ = 1.5 (--threshold)"
    calibrated = ThresholdChoice(0.123456789, "x", 4.0)
    assert calibrated.describe() == "θ = 0.123457 (x, calibrated for 4-byte patches)"
    assert MISMATCH_FACTOR == 1.5
    assert calibrated.mismatch(6.0) is None and calibrated.mismatch(4 / 1.5) is None  # the bounds are allowed
    assert calibrated.mismatch(6.01).startswith("mean patch 6.01 bytes is far from the 4 bytes θ = 0.123457")
    assert calibrated.mismatch(2.6) is not None
    assert ThresholdChoice(1.5, "--threshold").mismatch(100.0) is None  # no target: nothing to compare
    assert calibrated.mismatch(0.0) is None


def write_model_config(directory, **extra):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"format": "bltdata-entropy-model", "model": {}, **extra}))
    return str(directory)


def test_choose_threshold_follows_the_shared_rule(tmp_path):
    calls = []

    def calibrate():
        calls.append(1)
        return 0.25

    with pytest.raises(ValueError, match="not both"):
        choose_threshold(None, "entropy", threshold=1.0, target_patch_size=4.0, calibrate=calibrate)
    assert choose_threshold(None, "entropy", threshold=2) == ThresholdChoice(2.0, "--threshold")
    assert calls == []
    assert choose_threshold(None, "entropy", target_patch_size=4.0, calibrate=calibrate) == \
        ThresholdChoice(0.25, "--target-patch-size", 4.0)
    assert calls == [1]
    recommended = write_model_config(tmp_path / "m", recommended_threshold=0.75, recommended_target_patch_size=5.0)
    assert choose_threshold(recommended, "entropy") == \
        ThresholdChoice(0.75, f"recommended by {recommended}'s config.json", 5.0)
    assert choose_threshold(recommended, "entropy", threshold=3.0).threshold == 3.0  # --threshold wins
    bare = write_model_config(tmp_path / "bare")
    choice = choose_threshold(bare, "entropy")
    assert choice.threshold == DEFAULT_THRESHOLD and f"{bare} records none" in choice.source
    missing = str(tmp_path / "nowhere")
    assert choose_threshold(missing, "monotonic") == ThresholdChoice(DEFAULT_THRESHOLD, "the reference θ")
    assert choose_threshold(None, "entropy") == ThresholdChoice(DEFAULT_THRESHOLD, "the reference θ")
    with pytest.raises(FileNotFoundError, match="config.json"):
        choose_threshold(missing, "entropy")  # entropy mode reads the model's config
