"""The Batch API's durable records: the ``batch_jobs`` and ``batch_lines`` tables (see :mod:`sedi.store.schema`).

Named queries for :mod:`sedi.teacher.batch_jobs`, which owns what a job is and its wire format. A job row and its
lines are written in the caller's transaction together with their ledger rows (:func:`sedi.store.ledger.
insert_attempt`); every later step (input file uploaded, job created at the provider, job ended) is one update.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

from sedi.base.vocabulary import INTERRUPTED, SENT, Usage

# batch_jobs.state, in order: rows written; input file uploaded; job created at the provider; lines recorded.
JobState = Literal["new", "uploaded", "created", "ended"]
NEW: JobState = "new"
UPLOADED: JobState = "uploaded"
CREATED: JobState = "created"
ENDED: JobState = "ended"


@dataclass(frozen=True)
class JobRow:
    """A ``batch_jobs`` row an earlier process left before its end."""

    id: int
    marker: str
    endpoint: str
    input_file_id: str | None
    batch_id: str | None
    created_at: float


@dataclass(frozen=True)
class InterruptedLine:
    """A job's line whose ledger row was marked 'interrupted' (charged ``charged``) when the store opened."""

    call_id: int
    request_key: str
    request: str  # the request as the cache stores it (JSON)
    charged: Usage


def insert_job(db: sqlite3.Connection, marker: str, endpoint: str, now: float) -> int:
    cur = db.execute(
        "INSERT INTO batch_jobs (marker, endpoint, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (marker, endpoint, NEW, now, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def insert_line(db: sqlite3.Connection, call_id: int, job_id: int, request: str) -> None:
    db.execute("INSERT INTO batch_lines (call_id, job_id, request) VALUES (?, ?, ?)", (call_id, job_id, request))


def unended_jobs(db: sqlite3.Connection) -> list[JobRow]:
    rows = db.execute(
        "SELECT id, marker, endpoint, input_file_id, batch_id, created_at FROM batch_jobs WHERE state != ? ORDER BY id",
        (ENDED,),
    ).fetchall()
    return [JobRow(int(r[0]), str(r[1]), str(r[2]), r[3], r[4], float(r[5])) for r in rows]


def interrupted_lines(db: sqlite3.Connection, job_id: int) -> list[InterruptedLine]:
    rows = db.execute(
        "SELECT c.id, c.request_key, l.request, c.charged_tokens, c.charged_cost_usd FROM batch_lines l "
        "JOIN calls c ON c.id = l.call_id WHERE l.job_id = ? AND c.status = ? ORDER BY c.id",
        (job_id, INTERRUPTED),
    ).fetchall()
    return [InterruptedLine(int(r[0]), str(r[1]), str(r[2]), Usage(1, int(r[3]), float(r[4]))) for r in rows]


def reopen_calls(db: sqlite3.Connection, call_ids: list[int]) -> None:
    """Put interrupted ledger rows back in flight: 'sent', charged nothing (the budget holds their reservation)."""
    db.executemany(
        "UPDATE calls SET status = ?, charged_tokens = 0, charged_cost_usd = 0, error_class = NULL, error = NULL "
        "WHERE id = ? AND status = ?",
        [(SENT, call_id, INTERRUPTED) for call_id in call_ids],
    )


def record_file(db: sqlite3.Connection, job_id: int, file_id: str) -> None:
    db.execute(
        "UPDATE batch_jobs SET input_file_id = ?, state = ?, updated_at = ? WHERE id = ?",
        (file_id, UPLOADED, time.time(), job_id),
    )


def record_batch(db: sqlite3.Connection, job_id: int, batch_id: str) -> None:
    """The job's id at the provider, on the job and on every ledger row it carries, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "UPDATE batch_jobs SET batch_id = ?, state = ?, updated_at = ? WHERE id = ?",
            (batch_id, CREATED, time.time(), job_id),
        )
        db.execute(
            "UPDATE calls SET batch_id = ? WHERE id IN (SELECT call_id FROM batch_lines WHERE job_id = ?)",
            (batch_id, job_id),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def record_status(db: sqlite3.Connection, job_id: int, status: str, *, ended: bool = False) -> None:
    """The provider's status of the job (or 'recorded'); with ``ended`` its lines are all recorded."""
    db.execute(
        "UPDATE batch_jobs SET status = ?, state = CASE WHEN ? THEN ? ELSE state END, updated_at = ? WHERE id = ?",
        (status, ended, ENDED, time.time(), job_id),
    )
