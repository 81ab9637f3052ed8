"""How sure a comparison of calls per kept task is: intervals for the ratio of two arms, and the words for it.

- One pair of runs: kept tasks are counts, so the log of the ratio of two runs' calls per kept task has a
  standard error of about sqrt(1/kept_a + 1/kept_b) (the delta method for Poisson counts at fixed calls).
  6 kept against 5 in 8 calls each gives 0.83x with a 95% interval of 0.25x to 2.7x: no difference shown.
- Several seeds: a paired, two-level bootstrap. Resample the seeds with replacement, then within each drawn
  seed resample its rounds (a round of one arm is paired with the same round of the other arm: both saw
  the same number of calls, and round 1's prompts are the same), and take the ratio of the pooled sums
  (sum of calls over sum of kept, per arm). Percentile interval. Seeds are the independent unit; the rounds
  inside a seed add the within-run variation that three seeds alone cannot show.

- Seeds known only by their totals (run directories gone, or per-seed tables from elsewhere): the same paired
  bootstrap over seeds, with the rounds level replaced by a Poisson redraw of each drawn seed's kept count at its
  fixed calls (:func:`totals_bootstrap_ratio_ci`), the within-run noise the single-pair interval assumes.

A difference is only called a difference when its interval excludes 1 (:func:`verdict`). The same Poisson
interval forecasts the calls a run still needs (:func:`calls_to_keep`, used by ``sedi estimate``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist

Rounds = Sequence[tuple[float, float]]  # per round: (calls, kept)

Z95 = NormalDist().inv_cdf(0.975)


def ratio(calls_a: float, kept_a: float, calls_b: float, kept_b: float) -> float | None:
    """(calls_b / kept_b) / (calls_a / kept_a): arm b's calls per kept task relative to arm a's."""
    if not (kept_a and kept_b and calls_a):
        return None
    return (calls_b / kept_b) / (calls_a / kept_a)


def poisson_ratio_ci(calls_a: float, kept_a: float, calls_b: float, kept_b: float) -> tuple[float, float] | None:
    """95% interval of :func:`ratio` for one pair of runs (None when an arm kept nothing)."""
    point = ratio(calls_a, kept_a, calls_b, kept_b)
    if point is None:
        return None
    half = Z95 * math.sqrt(1 / kept_a + 1 / kept_b)
    return point * math.exp(-half), point * math.exp(half)


def calls_to_keep(calls: float, kept: float, more: float) -> tuple[float | None, float, float | None]:
    """Calls expected to keep ``more`` tasks at the rate seen so far (``kept`` tasks in ``calls``), with a 95%
    interval: (point, low, high).

    The calls per kept task still to come, over those seen, is a ratio of two Poisson counts at fixed calls (the
    ``kept`` seen and the ``more`` to come), so :func:`poisson_ratio_ci` gives the interval: the point is
    ``more * calls / kept`` and its log has a standard error of sqrt(1/kept + 1/more), the uncertainty of the rate
    seen plus the chance in the tasks to come. Nothing kept yet: no point and no upper end; the lower end uses the
    95% upper bound of a Poisson mean after zero events, -ln(0.05) = 3.0 kept tasks in ``calls``."""
    if more <= 0:
        return 0.0, 0.0, 0.0
    if kept <= 0:
        return None, more * calls / -math.log(0.05), None
    interval = poisson_ratio_ci(1.0, more, calls, kept)
    assert interval is not None
    return more * calls / kept, interval[0], interval[1]


def _pooled(pairs: list[tuple[tuple[float, float], tuple[float, float]]]) -> float | None:
    calls_a = sum(a[0] for a, _ in pairs)
    kept_a = sum(a[1] for a, _ in pairs)
    calls_b = sum(b[0] for _, b in pairs)
    kept_b = sum(b[1] for _, b in pairs)
    return ratio(calls_a, kept_a, calls_b, kept_b)


def bootstrap_ratio_ci(
    seeds_a: Sequence[Rounds], seeds_b: Sequence[Rounds], draws: int = 4000, seed: int = 0
) -> tuple[float, float] | None:
    """95% interval of the pooled ratio (b over a) by the two-level paired bootstrap; ``seeds_a[i]`` and
    ``seeds_b[i]`` are the per-round (calls, kept) of the two arms under run seed i, paired round by round
    (the shorter run's missing rounds count as zero calls and zero kept)."""
    paired = []
    for a, b in zip(seeds_a, seeds_b, strict=True):
        n = max(len(a), len(b))
        rounds = [(a[r] if r < len(a) else (0.0, 0.0), b[r] if r < len(b) else (0.0, 0.0)) for r in range(n)]
        if rounds:
            paired.append(rounds)
    if not paired:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(draws):
        sample = []
        for rounds in rng.choices(paired, k=len(paired)):
            sample += rng.choices(rounds, k=len(rounds))
        value = _pooled(sample)
        if value is not None:
            values.append(value)
    if len(values) < draws // 2:  # most resamples kept nothing in an arm: no interval to speak of
        return None
    values.sort()
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def totals_bootstrap_ratio_ci(
    totals_a: Sequence[tuple[float, float]], totals_b: Sequence[tuple[float, float]], draws: int = 4000, seed: int = 0
) -> tuple[float, float] | None:
    """95% interval of the pooled ratio (b over a) from each seed's (calls, kept) totals: resample seeds with
    replacement, redraw each drawn seed's kept counts as Poisson around the observed ones (calls stay fixed), take
    the ratio of the pooled sums. Percentile interval; None when most resamples leave an arm with nothing kept."""
    import numpy as np

    pairs = np.array([(a[0], a[1], b[0], b[1]) for a, b in zip(totals_a, totals_b, strict=True)], dtype=float)
    if not len(pairs):
        return None
    rng = np.random.default_rng(seed)
    drawn = pairs[rng.integers(0, len(pairs), size=(draws, len(pairs)))]  # draws x seeds x (ca, ka, cb, kb)
    kept_a = rng.poisson(drawn[..., 1]).sum(axis=1)
    kept_b = rng.poisson(drawn[..., 3]).sum(axis=1)
    usable = (kept_a > 0) & (kept_b > 0)
    if usable.sum() < draws // 2:
        return None
    values = (drawn[..., 2].sum(axis=1) / np.where(usable, kept_b, 1)) / (
        drawn[..., 0].sum(axis=1) / np.where(usable, kept_a, 1)
    )
    low, high = np.percentile(values[usable], [2.5, 97.5])
    return float(low), float(high)


def verdict(point: float | None, interval: tuple[float, float] | None) -> str:
    """'fewer', 'more' or 'no clear difference in' calls per kept task, as the interval allows."""
    if point is None or interval is None:
        return "no clear difference in"
    low, high = interval
    if high < 1:
        return "fewer"
    if low > 1:
        return "more"
    return "no clear difference in"
