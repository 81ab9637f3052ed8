"""The durable state of one run: a SQLite database (WAL) inside the run directory.

One file holds the call ledger (a row per HTTP attempt, written *before* the request is sent and
completed after, so a killed process leaves an ``interrupted`` row rather than a gap), the response
cache (written in the same transaction as the attempt that paid for it, so a received response is
never lost nor paid twice), and the tables later stages fill: candidates with verdicts, the seed pool
with its history, training steps. The run directory is locked while a process owns it.

The tables are defined in :mod:`sedi.store.schema`. The store owns the connection and the verbs several stages
share (run state, round stages, round metrics). Every other query is a named function of the store wing, grouped by
topic (``candidates``, ``seeds``, ``training``, ``plans``, ``dataset``; ``summary_queries`` and ``report_queries``
for readers of a finished or running run): the stages, the report and the export never write SQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sedi.base.vocabulary import (
    ERROR,
    INTERRUPTED,
    REFUSED,
    SENT,
    AttemptOutcome,
    CachedResponse,
    RoundStage,
    RunState,
    Usage,
)
from sedi.exceptions import RunDirError
from sedi.store import ledger
from sedi.store.rundir import (
    DB_NAME,
    refuse_lost_record,
    run_dir_errors,
    take_lock,
)
from sedi.store.schema import ADDED_COLUMNS, SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    from sedi.config.teacher import Prices


class RunStore:
    """The run directory's database. One process owns a run directory at a time (a file lock)."""

    DB_NAME = DB_NAME  # sedi.store.rundir.DB_NAME

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(
                f"{run_dir}: cannot create the run directory ({exc.strerror}): pick another --run-dir"
            ) from None
        self._lock_file = take_lock(run_dir)  # held for the store's lifetime
        try:
            # A broken database (not SQLite, truncated, read-only, on a full disk) is one RunDirError, not a
            # traceback; an empty one beside run files is refused rather than silently started afresh.
            with run_dir_errors(run_dir):
                refuse_lost_record(run_dir)
                self._open(run_dir)
        except BaseException:
            self.close()
            raise

    def _open(self, run_dir: Path) -> None:
        self.db = sqlite3.connect(run_dir / self.DB_NAME, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed response survives even a power cut; the cost is negligible per request.
        self.db.execute("PRAGMA synchronous=FULL")
        found = self._stored_schema_version()
        if found is not None and found != str(SCHEMA_VERSION):
            raise RunDirError(
                f"{run_dir}: run directory written by another sedi version (schema {found}, this one reads "
                f"{SCHEMA_VERSION}): use a new --run-dir, or the sedi version that created it"
            )
        self.db.executescript(SCHEMA)
        self._add_missing_columns()
        self._set_default("schema_version", str(SCHEMA_VERSION))
        self._set_default("state", "created")
        self._set_default("cache_hits", "0")
        self._reclassify_old_refusals()
        self.recovered_interrupted = self._mark_interrupted()

    def _add_missing_columns(self) -> None:
        """Bring a file written before a column was added (same schema version) up to date: additive only."""
        for table, column, decl in ADDED_COLUMNS:
            if not ledger.has_column(self.db, table, column):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _stored_schema_version(self) -> str | None:
        has_meta = self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if has_meta is None:
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        if hasattr(self, "db"):  # absent when opening failed
            self.db.close()
        self._lock_file.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------
    def _set_default(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def state(self) -> RunState:
        return cast("RunState", self.get_meta("state", "created") or "created")

    def set_state(self, state: RunState) -> None:
        self.set_meta("state", state)

    def record_config(self, digest: str, body: str) -> None:
        """Keep every distinct effective config the run was (re)started with."""
        last = self.db.execute("SELECT digest FROM configs ORDER BY id DESC LIMIT 1").fetchone()
        if last is None or last["digest"] != digest:
            self.db.execute(
                "INSERT INTO configs (digest, body, created_at) VALUES (?, ?, ?)", (digest, body, time.time())
            )

    # -- ledger and cache -------------------------------------------------------------------
    def _reclassify_old_refusals(self) -> None:
        """Refused connections recorded by sedi before 2026-12-07 as an ``error`` counted as one call: no HTTP
        status, ``APIConnectionError``, charged no token although a worst case was reserved. A connection dropped
        after sending is charged its reservation, so only the never-sent attempts match; they become ``refused``,
        no call, as they are recorded today (a stopped benchmark's run had spent 55 of its 150 calls this way)."""
        self.db.execute(
            "UPDATE calls SET status = ? WHERE status = ? AND http_status IS NULL "
            "AND error_class = 'APIConnectionError' AND charged_tokens = 0 AND reserved_tokens > 0",
            (REFUSED, ERROR),
        )

    def _mark_interrupted(self) -> int:
        """Attempts left 'sent' by a killed process: they may have been served and billed."""
        cur = self.db.execute(
            "UPDATE calls SET status = ?, charged_tokens = reserved_tokens, "
            "charged_cost_usd = reserved_cost_usd, error_class = 'Interrupted', "
            "error = 'the process ended before the response arrived' WHERE status = ?",
            (INTERRUPTED, SENT),
        )
        return cur.rowcount

    def cached(self, request_key: str) -> CachedResponse | None:
        row = self.db.execute(
            "SELECT request_key, text, finish_reason, prompt_tokens, completion_tokens "
            "FROM responses WHERE request_key = ?",
            (request_key,),
        ).fetchone()
        return CachedResponse(**dict(row)) if row else None

    def count_cache_hit(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'cache_hits'")

    def begin_attempt(
        self, request_key: str, attempt: int, model: str, endpoint: str, reserved: Usage, base_url: str | None = None
    ) -> int:
        """Write the ledger row before the request leaves, so a crash cannot hide a sent request.

        The attempt number is assigned at insert (one more than the key's highest, at least ``attempt``),
        so concurrent attempts of one key never collide. A failed write raises :class:`RunDirError`."""
        with ledger.ledger_writes(self.run_dir / self.DB_NAME):
            return ledger.insert_attempt(
                self.db, request_key, attempt, model, endpoint, reserved.tokens, reserved.cost_usd, base_url
            )

    def finish_attempt(
        self, call_id: int, outcome: AttemptOutcome, response: tuple[str, CachedResponse] | None = None
    ) -> None:
        """Complete the ledger row and, in the same transaction, cache the response it paid for."""
        with ledger.ledger_writes(self.run_dir / self.DB_NAME):
            ledger.complete_attempt(self.db, call_id, outcome, response)

    # -- rounds -----------------------------------------------------------------------------
    # Every write below runs on the store's one connection: inside ``with store.transaction():`` it is part of
    # that transaction (committed or rolled back with it); outside one it is a transaction of its own.
    def mark_round(self, round_index: int, stage: RoundStage) -> None:
        """Record that the round completed ``stage`` (the stages are ordered: see sedi.loop.STAGES)."""
        self.db.execute(
            "INSERT OR REPLACE INTO rounds (round, stage, updated_at) VALUES (?, ?, ?)",
            (round_index, stage, time.time()),
        )

    def round_stage(self, round_index: int) -> RoundStage | None:
        """The last stage the round completed (see sedi.loop.STAGES), or None if it has not completed one."""
        row = self.db.execute("SELECT stage FROM rounds WHERE round = ?", (round_index,)).fetchone()
        return None if row is None else cast("RoundStage", str(row[0]))

    def last_round(self, stages: Iterable[RoundStage]) -> int | None:
        """The latest round whose last completed stage is one of ``stages``, or None."""
        wanted = list(stages)
        marks = ", ".join("?" * len(wanted))
        row = self.db.execute(f"SELECT MAX(round) FROM rounds WHERE stage IN ({marks})", wanted).fetchone()
        return None if row[0] is None else int(row[0])

    def record_metrics(self, round_index: int, metrics: Mapping[str, float], *, accumulate: bool = False) -> None:
        """Store numbers measured for a round (``round_metrics``), replacing earlier values of the same names or,
        with ``accumulate``, adding to them. All rows are written together: in the open transaction if there is
        one, else in a transaction of their own."""
        sql = (
            "INSERT INTO round_metrics (round, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (round, name) DO UPDATE SET value = value + excluded.value"
            if accumulate
            else "INSERT OR REPLACE INTO round_metrics (round, name, value) VALUES (?, ?, ?)"
        )
        rows = [(round_index, name, value) for name, value in metrics.items()]
        if self.db.in_transaction:
            self.db.executemany(sql, rows)
        else:
            with self.transaction() as db:
                db.executemany(sql, rows)

    def metric(self, name: str) -> dict[int, float]:
        """One metric's value per round (rounds that recorded it)."""
        rows = self.db.execute("SELECT round, value FROM round_metrics WHERE name = ? AND value IS NOT NULL", (name,))
        return {int(r): float(v) for r, v in rows}

    def has_metric(self, round_index: int, name: str) -> bool:
        row = self.db.execute("SELECT 1 FROM round_metrics WHERE round = ? AND name = ?", (round_index, name))
        return row.fetchone() is not None

    # -- spending -----------------------------------------------------------------------------
    def spent(self, prices: Prices | None = None) -> Usage:
        """What the budget has used: every attempt is a call; tokens as charged; the cost as charged or, if
        higher, the ledger's tokens at ``prices`` (a run started without prices does not restart at $0)."""
        return Usage(*ledger.spent(self.db, prices))

    def ledger(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM calls ORDER BY id")]
