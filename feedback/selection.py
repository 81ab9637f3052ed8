"""Which tasks join the seed pool and which leave it, from recorded training signals. Pure Python.

- :func:`select_attractive`: every window of ``interval`` consecutive optimizer steps yields its step with the
  highest signal (the "attractive" batch).
- :func:`promotions`: the machine-generated tasks of attractive steps become seeds.
- :func:`demotions`: when the pool exceeds its cap, the seeds with the weakest record leave.

Every decision carries the signal value and a reason string, so the pool's history can be audited.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from feedback.records import StepRecord
from feedback.signals import loss_drop

Selector = Literal["grad_norm", "loss", "loss_drop"]


class FeedbackConfig(BaseModel):
    """How training signals feed back into the seed pool."""

    model_config = ConfigDict(extra="forbid")

    # SeDi-Instruct picks the highest-gradient-norm batch among every 10 optimizer steps.
    interval: int = Field(10, ge=1, description="Optimizer steps per selection window.")
    selector: Selector = Field(
        "grad_norm",
        description="Step signal that makes a batch attractive: pre-clipping gradient norm (the paper's), "
        "training loss, or loss drop to the next step (see feedback.signals.loss_drop).",
    )
    promote: Literal["all", "top_k"] = Field(
        "all",
        description="Promote every machine-generated task of an attractive batch ('all', the paper's rule), or "
        "only the top_k of each batch by per-example loss ('top_k', needs per-example losses).",
    )
    top_k: int = Field(2, ge=1, description="Tasks promoted per attractive batch when promote='top_k'.")
    # 175 human seeds (Self-Instruct) plus room for about as many promoted ones; a larger pool dilutes the
    # human seeds that every generation prompt samples from.
    max_pool_size: int = Field(350, ge=1, description="Most seeds in the pool; beyond it the weakest are demoted.")
    protect_human: bool = Field(True, description="Never demote human-written seeds.")


class _Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Attractive(_Decision):
    """The step with the highest signal within one window of steps."""

    window_start: int = Field(description="First step of the window.")
    window_end: int = Field(description="Last step of the window (inclusive).")
    step: int = Field(description="The chosen step.")
    value: float = Field(description="Its signal value.")
    ids: list[int] = Field(description="Ids of the tasks trained in that step.")


class Promotion(_Decision):
    """A task added to the seed pool."""

    id: int = Field(description="Task id.")
    step: int = Field(description="The attractive step whose batch held the task.")
    value: float = Field(description="Signal behind the decision: the step's signal, or the task's loss (top_k).")
    reason: str = Field(description="Why, in words, with the numbers.")


class PoolEntry(_Decision):
    """What is known about one seed in the pool."""

    id: int = Field(description="Task id.")
    origin: Literal["human", "machine"] = Field(description="Written by people or generated (and promoted).")
    added_round: int = Field(0, ge=0, description="Round in which the seed entered the pool (0: initial seeds).")
    offspring_total: int = Field(0, ge=0, description="Candidates generated from prompts that showed this seed.")
    offspring_rejected: int = Field(0, ge=0, description="Of those, how many the filters discarded.")
    batch_grad_norms: list[float] = Field(
        default_factory=list, description="Gradient norms of the optimizer steps whose batches held this seed."
    )


class Demotion(_Decision):
    """A seed removed from the pool."""

    id: int = Field(description="Task id.")
    reason: str = Field(description="Why, in words, with the numbers.")
    value: float = Field(description="The seed's offspring rejection rate, the first criterion.")
    mean_grad_norm: float | None = Field(None, description="Mean gradient norm of its batches (None: no batch).")


def _signals(steps: list[StepRecord], selector: Selector) -> dict[int, float]:
    if selector == "loss_drop":
        return loss_drop(steps)
    return {s.step: s.grad_norm if selector == "grad_norm" else s.loss for s in steps}


def select_attractive(steps: list[StepRecord], interval: int, selector: Selector = "grad_norm") -> list[Attractive]:
    """One attractive step per window of ``interval`` consecutive recorded steps, in step order.

    Windows are taken over the steps sorted by step number: steps 1-10, 11-20, ... for interval 10. A final
    partial window counts as soon as it holds one step, so the last steps of a round are not ignored (with
    ``loss_drop`` the very last step has no value, so a window of only that step yields nothing). Steps whose
    signal is missing or not finite are never chosen. Ties go to the earlier step.
    """
    if interval < 1:
        raise ValueError(f"interval must be at least 1, got {interval}: set FeedbackConfig.interval >= 1.")
    ordered = sorted(steps, key=lambda record: record.step)
    numbers = [s.step for s in ordered]
    if len(set(numbers)) != len(numbers):
        raise ValueError("step numbers repeat: number the steps of several rounds consecutively before selecting.")
    values = _signals(ordered, selector)
    chosen: list[Attractive] = []
    for start in range(0, len(ordered), interval):
        window = ordered[start : start + interval]
        scored = [(values[s.step], s) for s in window if s.step in values and math.isfinite(values[s.step])]
        if not scored:
            continue
        best_value, best = max(scored, key=lambda pair: (pair[0], -pair[1].step))
        chosen.append(
            Attractive(
                window_start=window[0].step,
                window_end=window[-1].step,
                step=best.step,
                value=best_value,
                ids=list(best.ids),
            )
        )
    return chosen


def promotions(
    attractive: list[Attractive],
    machine_ids: set[int],
    per_example_loss: dict[int, float] | None = None,
    promote: Literal["all", "top_k"] = "all",
    top_k: int = 2,
) -> list[Promotion]:
    """Machine-generated tasks of attractive batches to add to the pool; human tasks are already seeds.

    A task is promoted at most once (at its first attractive step). With ``top_k`` the tasks of each batch are
    ranked by per-example loss, highest first (ties by id); tasks without a loss (left out as too long) are not
    eligible.
    """
    if promote == "top_k" and per_example_loss is None:
        raise ValueError("promote='top_k' ranks tasks by per-example loss: pass per_example_loss (or promote='all').")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    done: set[int] = set()
    out: list[Promotion] = []
    for pick in attractive:
        candidates = list(dict.fromkeys(i for i in pick.ids if i in machine_ids and i not in done))
        window = f"steps {pick.window_start}-{pick.window_end}"
        if promote == "all":
            for task in candidates:
                reason = f"in step {pick.step}, the highest-signal step of {window} (signal {pick.value:.4g})"
                out.append(Promotion(id=task, step=pick.step, value=pick.value, reason=reason))
                done.add(task)
            continue
        assert per_example_loss is not None
        scored = sorted(
            ((per_example_loss[i], i) for i in candidates if i in per_example_loss), key=lambda p: (-p[0], p[1])
        )
        for rank, (loss, task) in enumerate(scored[:top_k], start=1):
            reason = (
                f"loss rank {rank} of {len(scored)} (loss {loss:.4g}) in step {pick.step}, "
                f"the highest-signal step of {window} (signal {pick.value:.4g})"
            )
            out.append(Promotion(id=task, step=pick.step, value=loss, reason=reason))
            done.add(task)
    return out


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
