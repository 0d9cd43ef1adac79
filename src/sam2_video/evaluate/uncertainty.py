"""How sure a difference of J&F is: bootstrap intervals paired over videos.

Videos are the unit sampled (objects of one video share its look and its motion, so they
are not independent draws): an interval resamples whole videos with replacement and
recomputes the DAVIS mean over all objects of the drawn videos. Differences are paired —
both models (or both experiments) are scored on the same objects, and the statistic is the
mean over objects of their per-object difference — so what the videos have in common
cancels out. Groups of runs (e.g. seeds) are resampled too, within each group: the interval
then also carries the spread between runs.

The draws come from a generator with a fixed seed: the same scores give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000

# one run's per-object scores: one (O,) array per video, videos in a fixed order
RunScores = Sequence[np.ndarray]


@dataclass(frozen=True)
class Interval:
    estimate: float  # on all videos (and the mean of each group's runs)
    low: float
    high: float
    videos: int
    objects: int

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the sign of the difference is settled."""
        return self.low > 0 or self.high < 0

    def verdict(self, a: str = "A", b: str = "B") -> str:
        if not self.resolved:
            return (
                f"not resolved at this sample size ({self.videos} videos, {self.objects} "
                f"objects): the {LEVEL:.0%} interval contains 0"
            )
        better, worse = (a, b) if self.estimate > 0 else (b, a)
        return f"resolved: {better} is better than {worse} ({LEVEL:.0%} interval excludes 0)"


def _video_matrix(runs: Sequence[RunScores]) -> tuple[np.ndarray, np.ndarray]:
    """(R, V) per-video sums over objects and (V,) object counts; every run must score the
    same objects of the same videos."""
    counts = np.array([np.asarray(v).size for v in runs[0]])
    for run in runs[1:]:
        sizes = [np.asarray(v).size for v in run]
        if len(sizes) != counts.size or np.any(np.array(sizes) != counts):
            raise ValueError("runs to compare must score the same objects of the same videos")
    sums = np.array([[float(np.sum(v)) for v in run] for run in runs])
    return sums, counts


def paired_difference(
    a: Sequence[RunScores], b: Sequence[RunScores], resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """Mean over objects of (group a's mean score - group b's), with its bootstrap interval.

    a, b: one or more runs each (one run per seed, say), each a list of per-video (O,)
    arrays over the same videos and objects. Each resample draws the videos with
    replacement, and each group's runs with replacement.
    """
    if not a or not b:
        raise ValueError("each side of a comparison needs at least one run")
    sums, counts = _video_matrix(list(a) + list(b))
    sums_a, sums_b = sums[: len(a)], sums[len(a) :]
    if counts.sum() == 0:
        raise ValueError("no object to compare")
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, counts.size, size=(resamples, counts.size))  # (N, V)
    runs_a = rng.integers(0, len(a), size=(resamples, len(a)))
    runs_b = rng.integers(0, len(b), size=(resamples, len(b)))
    # a resample's group mean per video: the mean of its drawn runs' video sums
    mean_a = sums_a[runs_a].mean(axis=1)  # (N, V)
    mean_b = sums_b[runs_b].mean(axis=1)
    picked = np.arange(resamples)[:, None]
    diff = (mean_a[picked, videos] - mean_b[picked, videos]).sum(axis=1)
    n = counts[videos].sum(axis=1)
    stats = diff[n > 0] / n[n > 0]
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    estimate = (sums_a.mean(axis=0) - sums_b.mean(axis=0)).sum() / counts.sum()
    return Interval(float(estimate), float(low), float(high), counts.size, int(counts.sum()))
