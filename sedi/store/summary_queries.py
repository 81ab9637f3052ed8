"""The counts ``sedi status`` prints (:mod:`sedi.report.summary`), read from a run database.

Every function takes a connection, usually a read-only one (:func:`sedi.store.rundir.connect_readonly`), and
works on a file written before a column was added (read without migrating it).
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from sedi.base.vocabulary import FAILED_CALLS, KEPT, LENGTH, REFUSED, REJECTED, REPAIR, ROUND_DONE
from sedi.store.ledger import cached_tokens_sql, has_column


class CallTotals(NamedTuple):
    """The ledger summed: calls (attempts sent), their tokens, how many failed or were cut at max_tokens, and the
    attempts refused before anything was sent (not calls)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int  # of prompt_tokens, from the provider's prompt cache
    failed: int
    truncated: int
    charged_tokens: int
    refused: int


class RepairCounts(NamedTuple):
    calls: int  # ledger rows of repair requests (refused attempts left out)
    kept: int  # kept tasks whose output came from a repair


def call_totals(db: sqlite3.Connection) -> CallTotals:
    marks = ", ".join("?" * len(FAILED_CALLS))
    row = db.execute(
        "SELECT COALESCE(SUM(status != ?), 0), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        f"COALESCE(SUM({cached_tokens_sql(db)}), 0), COALESCE(SUM(status IN ({marks})), 0), "
        "COALESCE(SUM(status = ?), 0), COALESCE(SUM(charged_tokens), 0), COALESCE(SUM(status = ?), 0) FROM calls",
        (REFUSED, *FAILED_CALLS, LENGTH, REFUSED),
    ).fetchone()
    return CallTotals(*(int(v) for v in row))


def verdict_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Candidates per verdict."""
    return {str(v): int(n) for v, n in db.execute("SELECT verdict, COUNT(*) FROM candidates GROUP BY verdict")}


def rejections(db: sqlite3.Connection, *, by_count: bool = True) -> dict[str, int]:
    """Rejected candidates per rule, most first (``by_count``) or by rule name."""
    order = "COUNT(*) DESC, rule" if by_count else "rule"
    rows = db.execute(
        f"SELECT rule, COUNT(*) FROM candidates WHERE verdict = ? GROUP BY rule ORDER BY {order}", (REJECTED,)
    )
    return {rule: int(n) for rule, n in rows}


def meta(db: sqlite3.Connection) -> dict[str, str]:
    return {str(k): v for k, v in db.execute("SELECT key, value FROM meta")}


def response_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


def repair_counts(db: sqlite3.Connection) -> RepairCounts:
    """generation.repair's calls and the kept tasks it fixed (0 in a file without ``candidates.original_output``)."""
    calls = db.execute(
        "SELECT COUNT(*) FROM calls c JOIN requests q ON q.request_key = c.request_key "
        "WHERE q.kind = ? AND c.status != ?",
        (REPAIR, REFUSED),
    ).fetchone()[0]
    kept = 0
    if has_column(db, "candidates", "original_output"):
        kept = db.execute(
            "SELECT COUNT(*) FROM candidates WHERE verdict = ? AND original_output IS NOT NULL", (KEPT,)
        ).fetchone()[0]
    return RepairCounts(int(calls), int(kept))


def latest_metrics(db: sqlite3.Connection) -> dict[str, float]:
    """Each round metric's latest recorded value (a round cut short may lack some)."""
    rows = db.execute(
        "SELECT name, value FROM round_metrics m WHERE value IS NOT NULL AND round = "
        "(SELECT MAX(round) FROM round_metrics WHERE name = m.name AND value IS NOT NULL)"
    )
    return {str(name): value for name, value in rows}


def seed_moves(db: sqlite3.Connection) -> dict[str, int]:
    """``seed_history`` rows per action (promote, demote)."""
    return {str(a): int(n) for a, n in db.execute("SELECT action, COUNT(*) FROM seed_history GROUP BY action")}


def rounds_done(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM rounds WHERE stage = ?", (ROUND_DONE,)).fetchone()[0])


def train_step_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM train_steps").fetchone()[0])


def active_seed_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM seed_pool WHERE active = 1").fetchone()[0])
