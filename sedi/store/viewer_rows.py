"""What the report's data viewer (:mod:`sedi.report.viewer`) reads from a run database: every candidate with the
in-context tasks its prompt showed, and the seed pool's texts.

Each function takes a connection, usually a read-only one (:func:`sedi.store.rundir.connect_readonly`). A table or
column an older or partial run directory lacks reads as empty, as the report's other readers do.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple


class CandidateRow(NamedTuple):
    """One parsed candidate and its verdict. ``context`` is the JSON list of task ids its request showed
    (``requests.context``), ``detail`` the JSON the deciding filter recorded (both as stored)."""

    id: int
    round: int
    verdict: str
    rule: str | None
    instruction: str
    input: str
    output: str
    detail: str | None
    problem: str | None
    original_output: str | None  # the output as parsed, where generation.repair replaced it
    context: str | None


class SeedRow(NamedTuple):
    task_id: str
    origin: str  # human | machine
    instruction: str
    added_round: int
    active: bool


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def viewer_candidates(db: sqlite3.Connection) -> list[CandidateRow]:
    """Every candidate in id order (the order they were parsed), with its request's in-context task ids."""
    columns = _columns(db, "candidates")
    if not columns:
        return []
    # original_output is an ADDED_COLUMNS column: a read-only file written before it has none.
    original = "c.original_output" if "original_output" in columns else "NULL"
    rows = db.execute(
        "SELECT c.id, c.round, c.verdict, c.rule, c.instruction, c.input, c.output, c.detail, c.problem, "
        f"{original}, q.context FROM candidates c LEFT JOIN requests q ON q.request_key = c.request_key ORDER BY c.id"
    )
    return [CandidateRow(*row) for row in rows]


def viewer_seeds(db: sqlite3.Connection) -> list[SeedRow]:
    """The seed pool, human seeds first as the run added them, then promoted tasks; inactive (demoted) ones too."""
    if not _columns(db, "seed_pool"):
        return []
    rows = db.execute("SELECT task_id, origin, instruction, added_round, active FROM seed_pool ORDER BY rowid")
    return [SeedRow(str(t), str(o), str(i), int(r), bool(a)) for t, o, i, r, a in rows]
