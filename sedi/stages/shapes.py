"""Request shapes in a run: the shape today's settings give, and what each shape's generation requests kept.

Read by the planner (:mod:`sedi.stages.steering`,
evidence for :mod:`feedback.shaping`), ``sedi status`` and ``sedi report``.
A kept task counts for the generation request that wrote its instruction (``candidates.request_key``), also when
its output came from a later repair request; a shape's cost is that of its generation requests only (every attempt,
``calls.cost_usd``). Light: no numpy, no model; works on a read-only connection and on a file written before the
``requests.shape`` column existed (no shapes then).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from feedback.shaping import ShapeArm, best_shape
from sedi.config.model import SediConfig
from sedi.config.seeds import Task
from sedi.config.shaping import PromptShape
from sedi.store.plans import ShapeRow, shape_rows

# One shape's answered generation requests, the tasks they kept and what they cost (USD at the prices in force when
# each was answered; 0 without prices).
ShapeStats = ShapeRow


def shown_tasks(tasks: Sequence[Task], shape: PromptShape | None) -> list[Task]:
    """The tasks a shape may show: those of at most its ``max_task_chars`` (instruction + input + output); all of them
    with no shape or no limit."""
    if shape is None or shape.max_task_chars is None:
        return list(tasks)
    return [t for t in tasks if len(t.instruction) + len(t.input) + len(t.output) <= shape.max_task_chars]


def possible_shapes(config: SediConfig) -> list[PromptShape]:
    """Every shape a request of this run may take: the fixed one, or each ``learn`` chooses among."""
    gen = config.generation
    return [gen.fixed_shape()] if gen.shaping == "fixed" else gen.shape_options()


def shape_stats(db: sqlite3.Connection, before_round: int | None = None) -> list[ShapeStats]:
    """Per shape, the generation requests of rounds before ``before_round`` (all rounds: None), by name."""
    return shape_rows(db, before_round)


def arms(stats: list[ShapeStats], per_dollar: bool) -> list[ShapeArm]:
    """The rule's view of each shape: cost in USD, or one per request (``per_dollar`` false, or nothing priced)."""
    priced = per_dollar and sum(s.cost_usd for s in stats) > 0
    return [ShapeArm(s.requests, float(s.kept), s.cost_usd if priced else float(s.requests)) for s in stats]


def shape_summary(db: sqlite3.Connection, cost_known: bool) -> dict[str, Any]:
    """``sedi status``'s ``shapes`` (per shape: requests, kept, kept_per_call, cost_usd, kept_per_usd) and
    ``shape_chosen`` (the best by posterior kept per dollar, per call when no cost is known; null with no shape)."""
    stats = shape_stats(db)
    priced = cost_known and sum(s.cost_usd for s in stats) > 0
    shapes = {
        s.name: {
            "requests": s.requests,
            "kept": s.kept,
            "kept_per_call": round(s.kept / s.requests, 4) if s.requests else None,
            "cost_usd": round(s.cost_usd, 6) if priced else None,
            "kept_per_usd": round(s.kept / s.cost_usd, 4) if priced and s.cost_usd > 0 else None,
        }
        for s in stats
    }
    best = best_shape(arms(stats, priced))
    return {"shapes": shapes, "shape_chosen": None if best is None else stats[best].name}
