"""Which seeds leave the pool. Pure Python.

- :func:`weak_seeds` (every feedback cycle, the method's "seeds that train poorly are removed"): the seeds whose
  offspring carried the least training signal, if below the pool's mean, once they have enough offspring.
- :func:`demotions` (a cap): when the pool exceeds ``max_pool_size``, the seeds with the weakest record leave.

Machine-added seeds always go before human ones, and human ones only when they are not protected.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from feedback.records import FrozenRecord


class PoolEntry(FrozenRecord):
    """What is known about one seed in the pool."""

    id: int = Field(description="Task id.")
    origin: Literal["human", "machine"] = Field(description="Written by people or generated (and promoted).")
    added_round: int = Field(0, ge=0, description="Round in which the seed entered the pool (0: initial seeds).")
    offspring_total: int = Field(0, ge=0, description="Candidates generated from prompts that showed this seed.")
    offspring_rejected: int = Field(0, ge=0, description="Of those, how many the filters discarded.")
    batch_grad_norms: list[float] = Field(
        default_factory=list, description="Gradient norms of the optimizer steps whose batches held this seed."
    )
    offspring_signal: float | None = Field(
        None,
        description="Mean training signal of its offspring: per candidate, the gradient norm of the step that "
        "trained it over the run's mean step norm, 0 when rejected (None: no offspring judged yet).",
    )
    offspring_judged: int = Field(0, ge=0, description="Offspring that count in offspring_signal.")


class Demotion(FrozenRecord):
    """A seed removed from the pool."""

    id: int = Field(description="Task id.")
    reason: str = Field(description="Why, in words, with the numbers.")
    value: float = Field(description="The signal that decided: offspring rejection rate (cap) or offspring signal.")
    mean_grad_norm: float | None = Field(None, description="Mean gradient norm of its batches (None: no batch).")


def _rejection_rate(entry: PoolEntry) -> float:
    # No offspring yet is no evidence against a seed: it ranks like a seed whose offspring were all kept.
    return entry.offspring_rejected / entry.offspring_total if entry.offspring_total else 0.0


def _mean_grad_norm(entry: PoolEntry) -> float | None:
    finite = [g for g in entry.batch_grad_norms if math.isfinite(g)]
    return sum(finite) / len(finite) if finite else None


def demotions(pool: list[PoolEntry], max_pool_size: int, protect_human: bool = True) -> list[Demotion]:
    """Seeds to remove so that the pool holds at most ``max_pool_size``, weakest first.

    Order: machine-added seeds before human ones (human ones only when ``protect_human`` is False); within each,
    highest offspring rejection rate first, then lowest mean gradient norm of their batches (a seed never seen
    in a batch counts as highest, i.e. is kept longest), then lowest id. When protected human seeds alone exceed
    the cap, every machine seed goes and the pool stays above the cap.
    """
    if max_pool_size < 0:
        raise ValueError(f"max_pool_size must be >= 0, got {max_pool_size}.")
    ids = [entry.id for entry in pool]
    if len(set(ids)) != len(ids):
        raise ValueError("pool ids repeat: each seed must appear once in the pool.")
    excess = len(pool) - max_pool_size
    if excess <= 0:
        return []

    def weakness(entry: PoolEntry) -> tuple[int, float, float, int]:
        mean = _mean_grad_norm(entry)
        return (
            0 if entry.origin == "machine" else 1,
            -_rejection_rate(entry),
            math.inf if mean is None else mean,
            entry.id,
        )

    eligible = [e for e in pool if e.origin == "machine" or not protect_human]
    out = []
    for entry in sorted(eligible, key=weakness)[:excess]:
        rate, mean = _rejection_rate(entry), _mean_grad_norm(entry)
        mean_text = "no batch yet" if mean is None else f"mean batch grad norm {mean:.4g}"
        reason = (
            f"pool of {len(pool)} over cap {max_pool_size}: {entry.origin} seed with offspring rejection rate "
            f"{rate:.2f} ({entry.offspring_rejected}/{entry.offspring_total}), {mean_text}"
        )
        out.append(Demotion(id=entry.id, reason=reason, value=rate, mean_grad_norm=mean))
    return out


def weak_seeds(pool: list[PoolEntry], per_cycle: int, min_evidence: int, protect_human: bool = True) -> list[Demotion]:
    """Up to ``per_cycle`` seeds to remove at one feedback cycle, weakest first.

    Eligible: seeds with at least ``min_evidence`` judged offspring whose ``offspring_signal`` is below the mean
    signal of all seeds with that much evidence (a pool whose seeds are all alike loses nothing); human seeds
    only when ``protect_human`` is False, and only after every eligible machine seed. Ties go to the lower id.
    """
    if per_cycle < 0 or min_evidence < 1:
        raise ValueError(f"need per_cycle >= 0 and min_evidence >= 1, got {per_cycle} and {min_evidence}.")
    judged = [e for e in pool if e.offspring_signal is not None and e.offspring_judged >= min_evidence]
    if not judged:
        return []
    mean = sum(e.offspring_signal or 0.0 for e in judged) / len(judged)
    eligible = [
        e for e in judged if (e.origin == "machine" or not protect_human) and (e.offspring_signal or 0.0) < mean - 1e-12
    ]
    eligible.sort(key=lambda e: (e.origin != "machine", e.offspring_signal, e.id))
    return [
        Demotion(
            id=e.id,
            value=float(e.offspring_signal or 0.0),
            mean_grad_norm=_mean_grad_norm(e),
            reason=f"{e.origin} seed whose {e.offspring_judged} offspring carried training signal "
            f"{e.offspring_signal:.3g} (pool mean {mean:.3g}; rejected offspring count 0)",
        )
        for e in eligible[:per_cycle]
    ]
