"""Bootstrap intervals paired over videos, on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_video.evaluate.uncertainty import paired_difference


def videos(values_per_video):
    return [np.asarray(v, dtype=float) for v in values_per_video]


def test_a_constant_difference_has_a_zero_width_interval_and_is_resolved():
    rng = np.random.default_rng(1)
    b = videos([rng.uniform(0, 0.8, size=n) for n in (1, 3, 2, 4)])
    a = [v + 0.05 for v in b]
    diff = paired_difference([a], [b])
    assert diff.estimate == pytest.approx(0.05)
    assert diff.low == pytest.approx(0.05) and diff.high == pytest.approx(0.05)
    assert diff.resolved and diff.verdict("tuned", "base").startswith("resolved: tuned")
    assert (diff.videos, diff.objects) == (4, 10)


def test_differences_that_cancel_are_not_resolved():
    b = videos([[0.5, 0.5]] * 10)
    a = videos([[0.6, 0.6]] * 5 + [[0.4, 0.4]] * 5)
    diff = paired_difference([a], [b])
    assert diff.estimate == pytest.approx(0.0)
    assert diff.low < 0 < diff.high
    assert not diff.resolved and diff.verdict().startswith("not resolved")


def test_the_estimate_is_the_mean_over_all_objects_not_over_videos():
    b = videos([[0.0], [0.0, 0.0, 0.0]])
    a = videos([[0.4], [0.0, 0.0, 0.0]])  # a mean of per-video means would say 0.2
    assert paired_difference([a], [b]).estimate == pytest.approx(0.1)


def test_the_interval_matches_the_normal_approximation_on_many_videos():
    """One object per video, differences ~ N(0.03, 0.1): the 95 % interval is close to
    mean +- 1.96 sd / sqrt(V)."""
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.03, 0.1, size=400)
    a, b = videos([[d] for d in diffs]), videos([[0.0]] * 400)
    diff = paired_difference([a], [b])
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert diff.low == pytest.approx(diffs.mean() - half, abs=0.15 * half)
    assert diff.high == pytest.approx(diffs.mean() + half, abs=0.15 * half)


def test_videos_are_the_unit_so_correlated_objects_widen_the_interval():
    """Ten objects that move together in each video carry the information of one: the
    interval is as wide as with one object per video, not sqrt(10) narrower."""
    rng = np.random.default_rng(2)
    per_video = rng.normal(0.0, 0.1, size=50)
    one = paired_difference([videos([[d] for d in per_video])], [videos([[0.0]] * 50)])
    ten = paired_difference([videos([[d] * 10 for d in per_video])], [videos([[0.0] * 10] * 50)])
    assert ten.high - ten.low == pytest.approx(one.high - one.low, rel=0.05)


def test_groups_of_runs_carry_the_spread_between_runs():
    """Two seeds of A that disagree widen the interval compared with one run of their mean."""
    b = videos([[0.5]] * 30)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.01, size=30)
    seed0 = videos([[0.6 + n] for n in noise])
    seed1 = videos([[0.5 + n] for n in noise])
    mean_run = videos([[0.55 + n] for n in noise])
    pooled = paired_difference([seed0, seed1], [b])
    single = paired_difference([mean_run], [b])
    assert pooled.estimate == pytest.approx(single.estimate)
    assert pooled.high - pooled.low > 5 * (single.high - single.low)


def test_runs_over_other_objects_are_refused():
    with pytest.raises(ValueError, match="same objects"):
        paired_difference([videos([[0.1, 0.2]])], [videos([[0.1]])])
