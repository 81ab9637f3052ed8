"""A run's tables as plain rows for the Python API (:mod:`sedi.api`), read without changing the run directory.

Every reader opens its own read-only connection (:func:`sedi.store.rundir.connect_readonly`), so it works while
a run is going on in another process and on a read-only copy, and never leaves a file behind. The rows are plain
dicts and lists; :mod:`sedi.api` turns them into pandas and ``datasets`` objects, so this wing imports neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sedi.store.dataset import kept_records
from sedi.store.rundir import read_run_db

T = TypeVar("T")

# One row per ledger attempt, with the purpose of its request (round and kind: tasks, classify, instances, repair).
# A LEFT JOIN on the requests' primary key: a call whose request row is missing still appears, once.
_LEDGER_SQL = """
SELECT c.*, q.round AS round, q.kind AS kind
FROM calls c LEFT JOIN requests q ON q.request_key = c.request_key
ORDER BY c.id
"""


class _ReadOnlyRun:
    """What :func:`sedi.store.dataset.kept_records` reads: a connection with ``sqlite3.Row`` rows."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


def read(run_dir: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """``query`` on a read-only connection with rows by name (:func:`sedi.store.rundir.read_run_db`)."""

    def by_name(db: sqlite3.Connection) -> T:
        db.row_factory = sqlite3.Row
        return query(db)

    return read_run_db(run_dir, by_name)


def ledger_rows(db: sqlite3.Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and every row of the call ledger (one per HTTP attempt; cache hits are not calls), in
    order, with the round and kind of its request. The names come from the file itself: an older run file
    lacks the columns added since (schema.ADDED_COLUMNS), and an empty ledger still has them."""
    cursor = db.execute(_LEDGER_SQL)
    return [d[0] for d in cursor.description], [tuple(row) for row in cursor]


def metric_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """One row per round: ``round``, the last ``stage`` it completed (null for a round that recorded metrics
    before its first stage), then every metric the round recorded (``round_metrics``), by name."""
    stages = {int(r[0]): str(r[1]) for r in db.execute("SELECT round, stage FROM rounds")}
    metrics: dict[int, dict[str, Any]] = {}
    for r, name, value in db.execute("SELECT round, name, value FROM round_metrics ORDER BY round, name"):
        metrics.setdefault(int(r), {})[str(name)] = value
    return [{"round": r, "stage": stages.get(r), **metrics.get(r, {})} for r in sorted(set(stages) | set(metrics))]


def kept_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The kept tasks as ``data/kept.jsonl`` holds them (:func:`sedi.store.dataset.kept_records`, the same
    query), with the provenance fields lifted to columns: ``round``, ``call_id``, ``request_key``, ``position``,
    ``sample_index``, ``in_context`` (the task ids the prompt showed) and ``instance_request_key``."""
    rows = []
    for record in kept_records(_ReadOnlyRun(db)):
        provenance = record.pop("provenance")
        rows.append(record | provenance)
    return rows
