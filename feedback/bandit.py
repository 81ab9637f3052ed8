"""Which seeds a generation prompt shows, steered by what earlier prompts yielded. Pure Python.

Every pool seed is an arm whose evidence is its offspring: a prompt that showed it and produced ``K`` kept and
``R`` rejected candidates adds ``K`` successes and ``R`` failures to each seed it showed (the counts the
demotion rule uses too). The teacher read the seeds together, so these counts are optimistic about what one
seed decides; the exploration floor offsets that. Measured on a simulation (48 seeds, a quarter of them
productive, a prompt's yield growing with the productive seeds it shows, 12 prompts of 6 seeds per round, 200
repetitions): the share of prompt slots given to productive seeds in rounds 4-5 was 0.25 uniformly, 0.47
with each prompt's counts shared among its seeds (K / n and R / n) and 0.59 with the full counts. A prompt
draws its seeds by Thompson sampling on each seed's Beta
posterior of offspring keep rate. The prior is centred on the pool's pooled keep rate (empirical Bayes): with a
flat Beta(1, 1) a seed never shown looks like a 50% keeper, better than proven seeds on a teacher whose keep
rate is 27%, and every newly promoted seed would crowd the proven ones out (seen in tests/test_steering.py:
the productive share fell back from 0.34 to 0.22 in the last round). Two floors keep the data diverse:

- exploration: ``explore`` of each prompt's slots are drawn uniformly from the pool, so every seed, however
  unlucky its first prompts, keeps a chance to be shown again;
- topic coverage: while the pool allows it, a prompt shows at most one seed per topic (the caller's topic
  labels, for example the seed tasks' embedding clusters), so a prompt never fills with one productive topic.

Uniform draws (``steer`` off) use :func:`draw_uniform`; both return seed ids in prompt order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from feedback.config import BanditConfig


@dataclass(frozen=True)
class Arm:
    """One pool seed as the bandit sees it."""

    id: int
    kept: float = 0.0  # kept offspring of the prompts that showed this seed
    rejected: float = 0.0  # rejected offspring of those prompts
    topic: int = 0


def pooled_rate(arms: Sequence[Arm]) -> float:
    """The pool's keep rate over all credited offspring (0.5 with no evidence)."""
    kept, total = sum(a.kept for a in arms), sum(a.kept + a.rejected for a in arms)
    return kept / total if total > 0 else 0.5


def _beta(arm: Arm, prior: float, rate: float) -> tuple[float, float]:
    # Clamped away from 0 and 1: a pool that kept everything (or nothing) so far still leaves room to learn.
    m = min(max(rate, 0.02), 0.98)
    return prior * m + arm.kept, prior * (1 - m) + arm.rejected


def posterior_mean(arm: Arm, prior: float = 2.0, rate: float = 0.5) -> float:
    a, b = _beta(arm, prior, rate)
    return a / (a + b)


def draw_uniform(arms: Sequence[Arm], k: int, rng: random.Random) -> list[int]:
    """``k`` distinct seeds, uniformly (the paper's "randomly chosen subset" of the pool)."""
    return [a.id for a in rng.sample(list(arms), min(k, len(arms)))]


def _take(ranked: list[Arm], k: int, used_topics: set[int], one_per_topic: bool) -> list[Arm]:
    """The first ``k`` of ``ranked``, skipping topics already used while unused topics remain."""
    chosen: list[Arm] = []
    for arm in ranked:
        if len(chosen) == k:
            break
        if one_per_topic and arm.topic in used_topics:
            continue
        chosen.append(arm)
        used_topics.add(arm.topic)
    if len(chosen) < k:  # fewer topics than slots: fill by rank
        picked = {a.id for a in chosen}
        chosen += [a for a in ranked if a.id not in picked][: k - len(chosen)]
    return chosen


def draw_thompson(arms: Sequence[Arm], k: int, rng: random.Random, config: BanditConfig) -> tuple[list[int], int]:
    """``k`` distinct seeds: ``round(k * explore)`` uniformly, the rest by Thompson sampling; returns the ids in
    prompt order (shuffled, so rank never becomes position) and how many slots were exploration."""
    pool = list(arms)
    k = min(k, len(pool))
    explored = min(k, int(k * config.explore + 0.5))
    used: set[int] = set()
    uniform = _take(rng.sample(pool, len(pool)), explored, used, config.one_per_topic)
    taken = {a.id for a in uniform}
    rest = [a for a in pool if a.id not in taken]
    rate = pooled_rate(pool)
    scores = {a.id: rng.betavariate(*_beta(a, config.prior, rate)) for a in rest}
    ranked = sorted(rest, key=lambda a: (-scores[a.id], a.id))
    chosen = uniform + _take(ranked, k - explored, used, config.one_per_topic)
    ids = [a.id for a in chosen]
    rng.shuffle(ids)
    return ids, explored


def top_share(arms: Sequence[Arm], shown: Sequence[Sequence[int]], prior: float = 2.0, top: float = 0.1) -> float:
    """The share of in-context slots in ``shown`` (one id list per prompt) that went to the ``top`` fraction of
    arms by posterior mean keep rate: about ``top`` for uniform draws, more when the bandit exploits."""
    slots = [i for prompt in shown for i in prompt]
    if not arms or not slots:
        return 0.0
    rate = pooled_rate(arms)
    ranked = sorted(arms, key=lambda a: (-posterior_mean(a, prior, rate), a.id))
    best = {a.id for a in ranked[: max(1, round(len(ranked) * top))]}
    return sum(i in best for i in slots) / len(slots)
