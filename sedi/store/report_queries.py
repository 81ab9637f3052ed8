"""What ``sedi report``, ``sedi compare``, ``sedi export`` and the estimate read from a run database beyond
``sedi status``'s counts (:mod:`sedi.store.summary_queries`).

Every function takes a connection, usually a read-only one (:func:`sedi.store.rundir.connect_readonly`). The
report's readers (``report_*``) find a table the run's schema lacks simply empty (an older or partial run
directory); the others raise ``sqlite3.OperationalError`` and leave it to the caller to say so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from sedi.base.vocabulary import HUMAN, KEPT, LENGTH, OK, PROMOTE, REFUSED, REJECTED, ROUND_DONE, TASKS


class RecordedConfig(NamedTuple):
    digest: str
    body: str  # YAML


class MetricValue(NamedTuple):
    round: int
    name: str
    value: float


class RoundCalls(NamedTuple):
    round: int
    calls: int  # attempts for the round's requests that count as calls (every status but refused)
    answered: int  # of those, the ones answered (ok or cut at max_tokens)
    kept: int
    done: bool  # the round completed every stage


class StepValue(NamedTuple):
    round: int
    step: int
    grad_norm: float
    attractive: bool


class RoundMoves(NamedTuple):
    round: int
    action: str  # a SeedAction
    times: int


class ArmCounts(NamedTuple):
    """One run's generation requests answered (and cut at max_tokens), their candidates and kept tasks, every
    candidate, the rejections by rule and the recorded config digest."""

    requests: int
    truncated: int
    request_candidates: int
    request_kept: int
    candidates: int
    rejected_by_rule: dict[str, int]
    config_digest: str | None


class RequestYield(NamedTuple):
    """One answered generation request: what it showed, its prompt's size, how it ended and what it yielded."""

    request_key: str
    shown: str  # JSON list of task ids (requests.context)
    prompt_tokens: int
    finish_reason: str | None
    candidates: int
    kept: int


def _rows(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A report query; a table this run's schema lacks is simply empty."""
    try:
        return [tuple(row) for row in db.execute(sql, params)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise


def latest_config(db: sqlite3.Connection) -> RecordedConfig | None:
    """The config the run was last (re)started with, as recorded; None before the run started."""
    row = db.execute("SELECT digest, body FROM configs ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else RecordedConfig(str(row[0]), str(row[1]))


def meta_value(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


# -- sedi report ---------------------------------------------------------------------------------------------------
def report_config_body(db: sqlite3.Connection) -> str | None:
    rows = _rows(db, "SELECT body FROM configs ORDER BY id DESC LIMIT 1")
    return str(rows[0][0]) if rows else None


def report_metrics(db: sqlite3.Connection) -> list[MetricValue]:
    rows = _rows(db, "SELECT round, name, value FROM round_metrics WHERE value IS NOT NULL")
    return [MetricValue(int(r), str(n), float(v)) for r, n, v in rows]


def report_keep_rates(db: sqlite3.Connection) -> dict[int, float]:
    """Per round, kept over all candidates."""
    rows = _rows(db, "SELECT round, 1.0 * SUM(verdict = ?) / COUNT(*) FROM candidates GROUP BY round", (KEPT,))
    return {int(r): float(rate) for r, rate in rows}


def report_steps(db: sqlite3.Connection) -> list[StepValue]:
    rows = _rows(db, "SELECT round, step, grad_norm, attractive FROM train_steps WHERE grad_norm IS NOT NULL")
    return [StepValue(int(r), int(s), float(g), bool(a)) for r, s, g, a in rows]


def report_call_ids(db: sqlite3.Connection) -> list[int]:
    return [int(i) for (i,) in _rows(db, "SELECT id FROM calls WHERE status != ? ORDER BY id", (REFUSED,))]


def report_kept_by_call(db: sqlite3.Connection) -> dict[int, int]:
    """Kept tasks per ledger call, credited to the call whose response produced them."""
    rows = _rows(
        db,
        "SELECT r.call_id, COUNT(*) FROM candidates c JOIN responses r ON r.request_key = c.request_key "
        "WHERE c.verdict = ? GROUP BY r.call_id",
        (KEPT,),
    )
    return {int(call): int(n) for call, n in rows}


def report_moves(db: sqlite3.Connection) -> list[RoundMoves]:
    """Promotions and demotions per round."""
    rows = _rows(db, "SELECT round, action, COUNT(*) FROM seed_history WHERE round IS NOT NULL GROUP BY round, action")
    return [RoundMoves(int(r), str(a), int(n)) for r, a, n in rows]


def report_move_totals(db: sqlite3.Connection) -> dict[str, int]:
    return {str(a): int(n) for a, n in _rows(db, "SELECT action, COUNT(*) FROM seed_history GROUP BY action")}


def feedback_rounds(db: sqlite3.Connection, metrics: Sequence[str]) -> list[MetricValue]:
    """Per round: optimizer steps (``train_steps``), seeds ``promoted`` and ``demoted``, and the round metrics
    named in ``metrics``. A query whose table an older run lacks adds nothing."""
    marks = ", ".join("?" * len(metrics))
    queries: tuple[tuple[str, Sequence[Any]], ...] = (
        ("SELECT round, 'train_steps', COUNT(*) FROM train_steps GROUP BY round", ()),
        (
            "SELECT round, CASE action WHEN ? THEN 'promoted' ELSE 'demoted' END, COUNT(*) FROM seed_history "
            "WHERE round IS NOT NULL GROUP BY round, action",
            (PROMOTE,),
        ),
        (f"SELECT round, name, value FROM round_metrics WHERE name IN ({marks})", tuple(metrics)),
    )
    out: list[MetricValue] = []
    for sql, params in queries:
        try:
            rows = db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # an older run without the table
            continue
        out += [MetricValue(int(r), str(name), float(value)) for r, name, value in rows]
    return out


# -- sedi compare and the estimate ---------------------------------------------------------------------------------
def arm_counts(db: sqlite3.Connection) -> ArmCounts:
    """The counts a comparison of arms adds to ``sedi status``'s (see :mod:`sedi.report.arm_stats`)."""
    requests, truncated = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(s.finish_reason = ?), 0) FROM requests q "
        "JOIN responses s ON s.request_key = q.request_key WHERE q.kind = ?",
        (LENGTH, TASKS),
    ).fetchone()
    from_requests, kept = db.execute(
        "SELECT COUNT(c.id), COALESCE(SUM(c.verdict = ?), 0) FROM candidates c "
        "JOIN requests q ON q.request_key = c.request_key WHERE q.kind = ?",
        (KEPT, TASKS),
    ).fetchone()
    candidates = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    rules = db.execute(
        "SELECT rule, COUNT(*) FROM candidates WHERE verdict = ? GROUP BY rule ORDER BY rule", (REJECTED,)
    )
    rejected = {str(rule): int(n) for rule, n in rules}
    config = latest_config(db)
    return ArmCounts(
        int(requests), int(truncated or 0), int(from_requests), int(kept or 0), int(candidates), rejected,
        None if config is None else config.digest,
    )  # fmt: skip


def metric_values(db: sqlite3.Connection, names: Sequence[str]) -> list[MetricValue]:
    """The round metrics named, by round."""
    marks = ", ".join("?" * len(names))
    rows = db.execute(
        f"SELECT round, name, value FROM round_metrics WHERE name IN ({marks}) ORDER BY round", tuple(names)
    ).fetchall()
    return [MetricValue(int(r), str(n), float(v)) for r, n, v in rows]


def round_calls(db: sqlite3.Connection) -> list[RoundCalls]:
    """Each round's calls (all, and answered), kept tasks and whether it is done, in round order: what a comparison
    of partial runs needs to count the same rounds in every arm, or only the calls that were answered."""
    calls = {
        int(r): (int(n), int(a))
        for r, n, a in db.execute(
            "SELECT q.round, COUNT(*), COALESCE(SUM(c.status IN (?, ?)), 0) FROM calls c "
            "JOIN requests q ON q.request_key = c.request_key WHERE c.status != ? GROUP BY q.round",
            (OK, LENGTH, REFUSED),
        )
    }
    kept = dict(db.execute("SELECT round, COUNT(*) FROM candidates WHERE verdict = ? GROUP BY round", (KEPT,)))
    done = {int(r) for (r,) in db.execute("SELECT round FROM rounds WHERE stage = ?", (ROUND_DONE,))}
    return [
        RoundCalls(r, *calls.get(r, (0, 0)), int(kept.get(r, 0)), r in done)
        for r in sorted(set(calls) | set(kept) | done)
    ]


def answered_generation_requests(db: sqlite3.Connection) -> int:
    return int(
        db.execute(
            "SELECT COUNT(*) FROM requests q JOIN responses r ON r.request_key = q.request_key WHERE q.kind = ?",
            (TASKS,),
        ).fetchone()[0]
    )


def timed_seconds(db: sqlite3.Connection) -> dict[str, float]:
    """Seconds each round part took, summed over rounds (the ``seconds_*`` round metrics, by full name)."""
    rows = db.execute("SELECT name, SUM(value) FROM round_metrics WHERE name LIKE 'seconds_%' GROUP BY name")
    return {str(name): float(total) for name, total in rows}


# -- scripts/prompt_yield.py -----------------------------------------------------------------------------------------
def human_seed_ids(db: sqlite3.Connection) -> set[str]:
    return {str(t) for (t,) in db.execute("SELECT task_id FROM seed_pool WHERE origin = ?", (HUMAN,))}


def request_yields(db: sqlite3.Connection, from_round: int) -> list[RequestYield]:
    """Every answered generation request of rounds from ``from_round`` on."""
    rows = db.execute(
        "SELECT r.request_key, r.context, s.prompt_tokens, s.finish_reason, "
        "(SELECT COUNT(*) FROM candidates c WHERE c.request_key = r.request_key), "
        "(SELECT COUNT(*) FROM candidates c WHERE c.request_key = r.request_key AND c.verdict = ?) "
        "FROM requests r JOIN responses s USING (request_key) WHERE r.kind = ? AND r.round >= ?",
        (KEPT, TASKS, from_round),
    ).fetchall()
    return [RequestYield(str(k), str(c), int(p), f, int(n), int(kept)) for k, c, p, f, n, kept in rows]


def outcome_counts(db: sqlite3.Connection, from_round: int) -> dict[str, int]:
    """Candidates of rounds from ``from_round`` on per rule that rejected them, or per verdict when none did."""
    rows = db.execute(
        "SELECT COALESCE(rule, verdict), COUNT(*) FROM candidates WHERE round >= ? GROUP BY 1", (from_round,)
    )
    return {str(rule): int(n) for rule, n in rows}
