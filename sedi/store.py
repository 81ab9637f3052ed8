"""The durable state of one run: a SQLite database (WAL) inside the run directory.

One file holds the call ledger (a row per HTTP attempt, written *before* the request is sent and
completed after, so a killed process leaves an ``interrupted`` row rather than a gap), the response
cache (written in the same transaction as the attempt that paid for it, so a received response is
never lost nor paid twice), and the tables later stages fill: candidates with verdicts, the seed pool
with its history, training steps. The run directory is locked while a process owns it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sedi import ledger
from sedi._types import AttemptOutcome, CachedResponse, Usage
from sedi.exceptions import RunDirError
from sedi.rundir import (
    DB_NAME,
    refuse_lost_record,
    run_dir_errors,
    take_lock,
)
from sedi.summary import summarize

if TYPE_CHECKING:
    from sedi.config_teacher import Prices

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL
);
-- One row per HTTP attempt. status: sent (in flight) | ok | length | error | interrupted.
-- charged_* is what the budget counts: the reported usage, or the reserved worst case when the
-- outcome is unknown (timeout, dropped connection, unreadable body, a process killed mid-request).
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_cost_usd REAL NOT NULL DEFAULT 0,
    charged_tokens INTEGER NOT NULL DEFAULT 0,
    charged_cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL,
    error_class TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    UNIQUE (request_key, attempt)
);
-- The response cache, content-addressed by request_key (see sedi.teacher.request_key).
CREATE TABLE IF NOT EXISTS responses (
    request_key TEXT PRIMARY KEY,
    call_id INTEGER NOT NULL REFERENCES calls(id),
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
);
-- Every planned teacher request with its purpose: which round, which in-context tasks (provenance)
-- or, for instance generation, which candidate it serves.
CREATE TABLE IF NOT EXISTS requests (
    request_key TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    candidate_id INTEGER,
    context TEXT NOT NULL DEFAULT '[]',
    parse_error TEXT
);
-- Every candidate task parsed from a response, with the verdict of the filters:
-- kept | rejected | pending (waiting for instances) ; rule: which filter decided; detail: JSON.
-- pooled: the instruction joined the similarity pool (it passed the heuristics and the similarity rule).
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    round INTEGER NOT NULL,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    problem TEXT,
    verdict TEXT NOT NULL,
    rule TEXT,
    detail TEXT,
    pooled INTEGER NOT NULL DEFAULT 0,
    is_classification INTEGER,
    UNIQUE (request_key, position)
);
CREATE TABLE IF NOT EXISTS instances (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (candidate_id, idx)
);
CREATE TABLE IF NOT EXISTS seed_pool (
    task_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    added_round INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS seed_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    action TEXT NOT NULL,
    round INTEGER,
    step INTEGER,
    signal REAL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- One row per optimizer step of the student; step counts across rounds (the adapter continues).
-- task_ids: JSON list of candidate ids trained in that step; attractive: picked by the feedback rule.
CREATE TABLE IF NOT EXISTS train_steps (
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    grad_norm REAL,
    loss REAL,
    learning_rate REAL,
    task_ids TEXT NOT NULL,
    attractive INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round, step)
);
-- Per-example loss of each trained task after its round (a no-grad pass with the round's adapter), the
-- second training signal: logged always, used to pick promotions when feedback.promote is 'top_k'.
CREATE TABLE IF NOT EXISTS example_losses (
    round INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    loss REAL NOT NULL,
    PRIMARY KEY (round, task_id)
);
-- Training batches as composed by the diversity stage: JSON list of candidate ids per batch.
CREATE TABLE IF NOT EXISTS batches (
    round INTEGER NOT NULL,
    batch_index INTEGER NOT NULL,
    task_ids TEXT NOT NULL,
    clusters INTEGER,
    mean_cosine_distance REAL,
    PRIMARY KEY (round, batch_index)
);
-- Numbers measured at the end of each round (kept, keep_rate, heldout_loss, diversity, seed_pool_size, ...).
CREATE TABLE IF NOT EXISTS round_metrics (
    round INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (round, name)
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class RunStore:
    """The run directory's database. One process owns a run directory at a time (a file lock)."""

    DB_NAME = DB_NAME  # sedi.rundir.DB_NAME

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
        self.db.executescript(_SCHEMA)
        self._set_default("schema_version", str(SCHEMA_VERSION))
        self._set_default("state", "created")
        self._set_default("cache_hits", "0")
        self.recovered_interrupted = self._mark_interrupted()

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
    def state(self) -> str:
        return self.get_meta("state", "created") or "created"

    def set_state(self, state: str) -> None:
        self.set_meta("state", state)

    def record_config(self, digest: str, body: str) -> None:
        """Keep every distinct effective config the run was (re)started with."""
        last = self.db.execute("SELECT digest FROM configs ORDER BY id DESC LIMIT 1").fetchone()
        if last is None or last["digest"] != digest:
            self.db.execute(
                "INSERT INTO configs (digest, body, created_at) VALUES (?, ?, ?)", (digest, body, time.time())
            )

    # -- ledger and cache -------------------------------------------------------------------
    def _mark_interrupted(self) -> int:
        """Attempts left 'sent' by a killed process: they may have been served and billed."""
        cur = self.db.execute(
            "UPDATE calls SET status = 'interrupted', charged_tokens = reserved_tokens, "
            "charged_cost_usd = reserved_cost_usd, error_class = 'Interrupted', "
            "error = 'the process ended before the response arrived' WHERE status = 'sent'"
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

    def attempts_for(self, request_key: str) -> int:
        row = self.db.execute("SELECT COUNT(*) AS n FROM calls WHERE request_key = ?", (request_key,)).fetchone()
        return int(row["n"])

    def begin_attempt(self, request_key: str, attempt: int, model: str, endpoint: str, reserved: Usage) -> int:
        """Write the ledger row before the request leaves, so a crash cannot hide a sent request.

        The attempt number is assigned at insert (one more than the key's highest, at least ``attempt``),
        so concurrent attempts of one key never collide. A failed write raises :class:`RunDirError`."""
        with ledger.ledger_writes(self.run_dir / self.DB_NAME):
            return ledger.insert_attempt(
                self.db, request_key, attempt, model, endpoint, reserved.tokens, reserved.cost_usd
            )

    def finish_attempt(
        self, call_id: int, outcome: AttemptOutcome, response: tuple[str, CachedResponse] | None = None
    ) -> None:
        """Complete the ledger row and, in the same transaction, cache the response it paid for."""
        with ledger.ledger_writes(self.run_dir / self.DB_NAME):
            ledger.complete_attempt(self.db, call_id, outcome, response)

    # -- later stages -----------------------------------------------------------------------
    def mark_round(self, round_index: int, stage: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rounds (round, stage, updated_at) VALUES (?, ?, ?)",
            (round_index, stage, time.time()),
        )

    def round_stage(self, round_index: int) -> str | None:
        """The last stage the round completed (see sedi.loop.STAGES), or None if it has not completed one."""
        row = self.db.execute("SELECT stage FROM rounds WHERE round = ?", (round_index,)).fetchone()
        return None if row is None else str(row[0])

    def spent(self, prices: Prices | None = None) -> Usage:
        """What the budget has used: every attempt is a call; tokens as charged; the cost as charged or, if
        higher, the ledger's tokens at ``prices`` (a run started without prices does not restart at $0)."""
        return Usage(*ledger.spent(self.db, prices))

    def ledger(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM calls ORDER BY id")]

    # -- summary ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return summarize(self.db, self.run_dir)


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace; used for hashing and storing requests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fsync_write(path: Path, text: str) -> None:
    """Write a small file atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
