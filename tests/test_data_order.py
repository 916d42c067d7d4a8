"""Global order and its split into slots: pure functions of (seed, epoch, manifest), interval arithmetic."""
import numpy as np
import pytest

from bltdata.data.order import (Plan, all_work_tokens, epoch_order, merge_plans, nearest_boundaries, permutation,
                                remaining_work, slot_work)

FP = "ab" * 32


def test_permutation_is_a_deterministic_permutation():
    p = permutation(1000, 1, 2, 3)
    assert sorted(p.tolist()) == list(range(1000))
    np.testing.assert_array_equal(p, permutation(1000, 1, 2, 3))
    assert not np.array_equal(p, permutation(1000, 1, 2, 4))
    assert not np.array_equal(p, np.arange(1000))
    # a fixed hash, not numpy's generator: this value must never change between versions
    assert permutation(8, 0, 0, 0, 1).tolist() == [6, 4, 1, 2, 0, 7, 5, 3]


def test_epochs_reshuffle_and_windows_cover_all_tokens():
    tokens = np.random.default_rng(0).integers(10, 100, 50)
    e0 = epoch_order(tokens, 0, seed=1, fingerprint=FP, shuffle=True, shuffle_window=3)
    e1 = epoch_order(tokens, 1, seed=1, fingerprint=FP, shuffle=True, shuffle_window=3)
    assert sorted(e0.order.tolist()) == list(range(50)) and not np.array_equal(e0.order, e1.order)
    assert e0.num_windows == 17 and e0.window_offsets[-1] == tokens.sum()
    assert e0.window_row_groups(16).tolist() == e0.order[48:].tolist()
    plain = epoch_order(tokens, 5, seed=1, fingerprint=FP, shuffle=False, shuffle_window=3)
    assert plain.order.tolist() == list(range(50))


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 17])
def test_nearest_boundaries_nonempty_and_balanced(parts):
    sizes = np.random.default_rng(parts).integers(1, 20, 17)
    cum = np.concatenate([[0], np.cumsum(sizes)])
    j = nearest_boundaries(cum, parts, nonempty=True)
    assert j[0] == 0 and j[-1] == 17 and len(j) == parts + 1
    assert (np.diff(j) >= 1).all()
    share = cum[j[1:]] - cum[j[:-1]]
    assert share.sum() == cum[-1]
    if parts <= 3:
        assert np.abs(share - cum[-1] / parts).max() <= sizes.max()


def _setup(n=40, window=2, seed=0):
    tokens = np.random.default_rng(seed).integers(5, 60, n).astype(np.int64)
    cache = {}

    def epochs(e):
        if e not in cache:
            cache[e] = epoch_order(tokens, e, seed=3, fingerprint=FP, shuffle=True, shuffle_window=window)
        return cache[e]
    return epochs, int(tokens.sum())


def covered(intervals):
    out = set()
    for a, b in intervals:
        out.update(range(a, b))
    return out


@pytest.mark.parametrize("num_slots", [1, 2, 3, 5])
def test_slots_partition_each_epoch(num_slots):
    epochs, T = _setup()
    work = [list(slot_work(Plan(), s, num_slots, epochs, T, max_epochs=2)) for s in range(num_slots)]
    sets = [covered(w) for w in work]
    assert sum(len(s) for s in sets) == 2 * T > 0
    assert set().union(*sets) == set(range(2 * T))
    totals = all_work_tokens(Plan(), num_slots, epochs, T, 2)
    assert totals.tolist() == [len(s) for s in sets]


@pytest.mark.parametrize("old,new", [(3, 2), (2, 5), (4, 4), (1, 3)])
def test_merge_continues_exactly_where_the_old_slots_stopped(old, new):
    epochs, T = _setup(seed=old * 10 + new)
    rng = np.random.default_rng(old + new)
    work = [list(slot_work(Plan(), s, old, epochs, T, max_epochs=3)) for s in range(old)]
    positions, consumed = [], set()
    for w in work:  # each old slot stopped somewhere in its work (some in epoch 0, some later)
        flat = sorted(covered(w))
        k = int(rng.integers(0, len(flat)))
        positions.append(flat[k])
        consumed.update(flat[:k])
    plan = merge_plans(Plan(), positions, epochs, T, max_epochs=3)
    new_sets = [covered(slot_work(plan, s, new, epochs, T, max_epochs=3)) for s in range(new)]
    assert sum(len(s) for s in new_sets) + len(consumed) == 3 * T
    assert set().union(consumed, *new_sets) == set(range(3 * T))
    # merging again (nobody read anything) changes nothing that is left
    again = merge_plans(plan, [None] * new, epochs, T, max_epochs=3)
    assert set().union(*[covered(slot_work(again, s, 2, epochs, T, 3)) for s in range(2)]) == set().union(*new_sets)


def test_remaining_work_clips_at_the_position():
    epochs, T = _setup()
    work = list(slot_work(Plan(), 1, 3, epochs, T, max_epochs=1))
    a, b = work[0]
    left = remaining_work(Plan(), 1, 3, epochs, T, a + 5, before_epoch=1, max_epochs=1)
    assert left == [(a + 5, b)] and b > a + 5


@pytest.mark.parametrize("num_slots", [1, 2, 3, 5, 40])
def test_sequence_aligned_bounds_cut_only_at_multiples_of_the_sequence_length(num_slots):
    from bltdata.data.order import epoch_bounds

    offsets = np.array([0, 100, 350, 351, 1000], dtype=np.int64)  # 4 windows, T = 1000
    bounds = epoch_bounds(offsets, num_slots, align=64)
    assert bounds[0] == 0 and bounds[-1] == 1000 and (np.diff(bounds) >= 0).all()
    assert all(b % 64 == 0 for b in bounds[:-1])  # every slot starts a whole sequence
    shares = np.diff(bounds)
    assert shares.max() - shares[shares > 0].min() <= 64  # equal up to one sequence
    assert shares.sum() == 1000 and (shares > 0).sum() == min(num_slots, 16)  # 16 sequences in all
