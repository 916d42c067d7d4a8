"""The stride scheduler: exact long-run byte proportions, bounded error, deterministic."""
import numpy as np
import pytest

from bltdata.data.mixing import StrideScheduler


def run(scheduler, sizes, steps, rng):
    picks = []
    for _ in range(steps):
        i = scheduler.pick([True] * len(sizes))
        scheduler.consume(i, int(rng.integers(*sizes[i])))
        picks.append(i)
    return picks


@pytest.mark.parametrize("weights", [[1, 1], [0.2, 0.8], [3, 1, 6]])
def test_proportions_follow_the_weights_within_one_item(weights):
    sizes = [(100, 9000), (10, 200), (4000, 4100)][:len(weights)]
    s = StrideScheduler(weights)
    picks = run(s, sizes, 5000, np.random.default_rng(0))
    share = np.array(s.taken) / sum(s.taken)
    target = np.array(weights) / sum(weights)
    assert len(set(picks)) == len(weights)
    assert np.abs(share - target).max() < 0.01
    # the bound behind it: passes differ by at most one item's bytes over its weight
    passes = np.array(s.taken) / np.array(s.weights)
    assert passes.max() - passes.min() <= max(hi for _, hi in sizes) / min(s.weights)


def test_deterministic_and_resumable_from_counters():
    a = StrideScheduler([1, 2])
    first = run(a, [(5, 50), (5, 50)], 100, np.random.default_rng(1))
    b = StrideScheduler([1, 2], taken=list(a.taken))
    rng = np.random.default_rng(2)
    rest_a = run(a, [(5, 50), (5, 50)], 50, rng)
    rest_b = run(b, [(5, 50), (5, 50)], 50, np.random.default_rng(2))
    assert rest_a == rest_b and len(first) == 100


def test_unavailable_sources_are_skipped_and_bad_weights_refused():
    s = StrideScheduler([1, 1])
    assert s.pick([False, True]) == 1
    assert s.pick([False, False]) is None
    with pytest.raises(ValueError, match="positive"):
        StrideScheduler([1, 0])
