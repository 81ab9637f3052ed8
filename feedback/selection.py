"""Which tasks join the seed pool, from recorded training signals. Pure Python.

- :func:`select_attractive`: every complete window of ``interval`` optimizer steps, counted over the whole run
  (steps 1-10, 11-20, ... however rounds cut them), yields its step with the highest signal (the "attractive"
  batch). A window still open at the end of a round waits for the next round's steps; the run's last partial
  window is settled only when the run ends (``final=True``).
- :func:`promotions`: the machine-generated tasks of attractive steps become seeds.

Which seeds leave is :mod:`feedback.pool`; how prompts pick among seeds is :mod:`feedback.bandit`. Every decision
carries the signal value and a reason string, so the pool's history can be audited.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from feedback.config import Selector
from feedback.records import FrozenRecord, StepRecord
from feedback.signals import loss_drop


class Attractive(FrozenRecord):
    """The step with the highest signal within one window of steps."""

    window_start: int = Field(description="First step of the window.")
    window_end: int = Field(description="Last step of the window (inclusive).")
    step: int = Field(description="The chosen step.")
    value: float = Field(description="Its signal value.")
    ids: list[int] = Field(description="Ids of the tasks trained in that step.")


class Promotion(FrozenRecord):
    """A task added to the seed pool."""

    id: int = Field(description="Task id.")
    step: int = Field(description="The attractive step whose batch held the task.")
    value: float = Field(description="Signal behind the decision: the step's signal, or the task's loss (top_k).")
    reason: str = Field(description="Why, in words, with the numbers.")


def _signals(steps: list[StepRecord], selector: Selector) -> dict[int, float]:
    if selector == "loss_drop":
        return loss_drop(steps)
    return {s.step: s.grad_norm if selector == "grad_norm" else s.loss for s in steps}


def select_attractive(
    steps: list[StepRecord],
    interval: int,
    selector: Selector = "grad_norm",
    *,
    after: int = 0,
    final: bool = False,
) -> list[Attractive]:
    """One attractive step per window of ``interval`` steps, windows ``after + 1 .. after + interval``, ...

    ``steps`` are all steps recorded so far (any order, numbered over the whole run); ``after`` is the last
    step whose window was already decided. A window is decided only once a step at or beyond its end is
    recorded; with ``final`` the last, partial window is decided too (the run is over). Steps whose signal is
    missing or not finite are never chosen (with ``loss_drop`` the very last step has no value); a window with
    no usable signal yields nothing. Ties go to the earlier step.
    """
    if interval < 1:
        raise ValueError(f"interval must be at least 1, got {interval}: set FeedbackConfig.interval >= 1.")
    ordered = sorted(steps, key=lambda record: record.step)
    numbers = [s.step for s in ordered]
    if len(set(numbers)) != len(numbers):
        raise ValueError("step numbers repeat: number the steps of several rounds consecutively before selecting.")
    values = _signals(ordered, selector)
    last = numbers[-1] if numbers else after
    chosen: list[Attractive] = []
    start = after + 1
    while start <= last:
        end = start + interval - 1
        if end > last and not final:
            break
        window = [s for s in ordered if start <= s.step <= end]
        scored = [(values[s.step], s) for s in window if s.step in values and math.isfinite(values[s.step])]
        if scored:
            best_value, best = max(scored, key=lambda pair: (pair[0], -pair[1].step))
            window_end = min(end, last)
            chosen.append(
                Attractive(window_start=start, window_end=window_end, step=best.step, value=best_value, ids=best.ids)
            )
        start = end + 1
    return chosen


def decided_through(steps: list[StepRecord], interval: int, *, after: int = 0, final: bool = False) -> int:
    """The last step whose window :func:`select_attractive` decides with the same arguments (``after`` if none)."""
    last = max((s.step for s in steps), default=after)
    if last <= after:
        return after
    complete = after + (last - after) // interval * interval
    return last if final else complete


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
