"""A round's recorded plan and what each request shape yielded, in the run database.

A round's generation requests are recorded with the in-context tasks they show (``requests.context``) and their
shape (``requests.shape``), so a resumed round replays them (:mod:`sedi.stages.steering`). :func:`shape_rows`
works on a read-only connection too (``sedi status``, ``sedi report``) and on a file written before the
``requests.shape`` column existed (no shapes then).
"""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple

from sedi.base.vocabulary import KEPT, TASKS
from sedi.store.db import RunStore
from sedi.store.ledger import has_column

# A kept task counts for the generation request that wrote its instruction (candidates.request_key), also when its
# output came from a later repair request; a shape's cost is that of its generation requests only (every attempt).
_SHAPES = """
SELECT shape, COUNT(*), COALESCE(SUM(kept), 0), COALESCE(SUM(cost), 0) FROM (
    SELECT q.shape AS shape,
           (SELECT COUNT(*) FROM candidates c WHERE c.request_key = q.request_key AND c.verdict = ?) AS kept,
           (SELECT COALESCE(SUM(k.cost_usd), 0) FROM calls k WHERE k.request_key = q.request_key) AS cost
    FROM requests q JOIN responses s ON s.request_key = q.request_key
    WHERE q.kind = ? AND q.shape IS NOT NULL AND q.round < ?
) GROUP BY shape ORDER BY shape
"""


class ShapeRow(NamedTuple):
    """One shape's answered generation requests, the tasks they kept and what they cost (USD)."""

    name: str
    requests: int
    kept: int
    cost_usd: float


def recorded_contexts(store: RunStore, round_index: int) -> dict[int, list[str]]:
    """The in-context task ids each generation request of the round showed, by sample index."""
    rows = store.db.execute(
        "SELECT sample_index, context FROM requests WHERE round = ? AND kind = ?", (round_index, TASKS)
    )
    return {int(i): json.loads(c) for i, c in rows}


def recorded_shapes(store: RunStore, round_index: int) -> dict[int, str]:
    """The shape name each generation request of the round was planned with, by sample index."""
    rows = store.db.execute(
        "SELECT sample_index, shape FROM requests WHERE round = ? AND kind = ? AND shape IS NOT NULL",
        (round_index, TASKS),
    ).fetchall()
    return {int(i): str(name) for i, name in rows}


def has_shapes(db: sqlite3.Connection) -> bool:
    """Whether the file has the ``requests.shape`` column (one written before it existed does not)."""
    return has_column(db, "requests", "shape")


def shape_rows(db: sqlite3.Connection, before_round: int | None = None) -> list[ShapeRow]:
    """Per shape, by name, the generation requests of rounds before ``before_round`` (all rounds: None)."""
    if not has_shapes(db):
        return []
    rows = db.execute(_SHAPES, (KEPT, TASKS, 2**62 if before_round is None else before_round)).fetchall()
    return [ShapeRow(str(n), int(r), int(k), float(c)) for n, r, k, c in rows]


def request_shapes(db: sqlite3.Connection) -> dict[str, str]:
    """Request key -> shape, of every request recorded with one (none in a file without the column)."""
    if not has_shapes(db):
        return {}
    return {str(k): str(s) for k, s in db.execute("SELECT request_key, shape FROM requests WHERE shape IS NOT NULL")}
