"""The call ledger's SQL: one row per HTTP attempt, and what it cost at the prices in force.

Kept apart from :mod:`sedi.store.db` (which owns the database file) so that the money rules live in one
short module: how attempts are numbered, how a database failure is reported, and how a run's cost is
recomputed from the token counts when the prices change between starts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sedi.base.redact import redact, redact_known
from sedi.base.vocabulary import REFUSED, SENT
from sedi.config.teacher import BATCH_API_DISCOUNT_DEFAULT
from sedi.exceptions import RunDirError

if TYPE_CHECKING:
    from sedi.base.vocabulary import AttemptOutcome, CachedResponse
    from sedi.config.teacher import TeacherConfig

# meta key recording the prices of the latest start: a JSON {"prompt", "completion"} and, when given,
# "cached_prompt" (USD per million tokens) and, when not the default, "batch_discount", the value of
# teacher.prices.batch_api_discount under the key's old name: this JSON is the run directory's format, not a
# config, so it keeps that name and a run directory written before the rename reads and prices the same;
# "free" (a local teacher, or teacher.free), or "none" (no prices given: the cost is unknown).
PRICES_META_KEY = "prices"
PRICES_FREE = "free"
PRICES_NONE = "none"
# calls.error_class of a 200 whose usage exceeds the request's reserved worst case (the run stops)
USAGE_OVER_RESERVATION = "UsageOverReservation"
# calls.error_class of a 200 with missing or partial usage (charged its worst case)
USAGE_UNKNOWN = "UsageUnknown"


@contextmanager
def ledger_writes(db_path: object) -> Iterator[None]:
    """Turn a failed ledger write (disk full, I/O error, locked) into a one-line :class:`RunDirError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise RunDirError(
            f"{db_path}: cannot write the call ledger ({exc}): free disk space or fix the run directory, then "
            "rerun the same command (answers already stored are kept; an unfinished call is charged its worst case)"
        ) from exc


def insert_attempt(
    db: sqlite3.Connection,
    request_key: str,
    floor: int,
    model: str,
    endpoint: str,
    tokens: int,
    cost: float,
    base_url: str | None = None,
) -> int:
    """Insert a 'sent' row and return its id. The attempt number is taken in the same statement as one
    more than the key's highest so far: two tasks sending the same key can never collide on it."""
    cur = db.execute(
        "INSERT INTO calls (request_key, attempt, model, endpoint, status, reserved_tokens, reserved_cost_usd, "
        "started_at, base_url) SELECT ?, MAX(COALESCE(MAX(attempt), -1) + 1, ?), ?, ?, ?, ?, ?, ?, ? "
        "FROM calls WHERE request_key = ?",
        (request_key, floor, model, endpoint, SENT, tokens, cost, time.time(), _clean(base_url), request_key),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _clean(text: str | None) -> str | None:
    return None if text is None else redact(text)


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def cached_tokens_sql(db: sqlite3.Connection) -> str:
    """The calls' cached-token column, or 0 in a file written before it existed (read without migrating it)."""
    return "cached_tokens" if has_column(db, "calls", "cached_tokens") else "0"


def batch_rate_sql(db: sqlite3.Connection) -> str:
    """The share of the price a row pays: ``:b`` (1 - teacher.prices.batch_api_discount) for a request sent in a batch
    job (its batch id is set), 1 otherwise, and in a file written before the column existed."""
    return "(CASE WHEN batch_id IS NULL THEN 1.0 ELSE :b END)" if has_column(db, "calls", "batch_id") else "1.0"


def _price_terms(prices: Any) -> dict[str, float]:
    """The SQL parameters of the prices, in USD per token (zeros without prices): p prompt, k cached prompt (the
    prompt rate unless ``prices.cached_prompt`` is given), c completion, m the higher of prompt and completion;
    b the share of them a batch request pays."""
    if prices is None:
        return {"p": 0.0, "k": 0.0, "c": 0.0, "m": 0.0, "b": 1.0}
    p, c = float(prices.prompt) / 1_000_000, float(prices.completion) / 1_000_000
    cached = getattr(prices, "cached_prompt", None)
    k = p if cached is None else float(cached) / 1_000_000
    discount = getattr(prices, "batch_api_discount", None)
    b = 1.0 - float(BATCH_API_DISCOUNT_DEFAULT if discount is None else discount)
    return {"p": p, "k": k, "c": c, "m": max(p, c), "b": b}


def _reported_cost_sql(cached: str, rate: str) -> str:
    """A row's reported tokens at the prices in force: its cached prompt tokens at the cached rate, all of it at
    the batch share for a batch request."""
    return f"{rate} * ((prompt_tokens - {cached}) * :p + {cached} * :k + completion_tokens * :c)"


def _charged_cost_sql(cached: str, rate: str) -> str:
    # A row's charge at the prices in force, never less than what it was charged when written (a price cut
    # cannot free budget already spent): its reported tokens at their own price and, for a row charged
    # without prices ($0), the tokens charged beyond those reported (the worst case of an unknown outcome,
    # whose prompt/completion split is not stored) at the higher of the two prices.
    return (
        f"MAX(charged_cost_usd, {_reported_cost_sql(cached, rate)} + CASE WHEN charged_cost_usd = 0 "
        f"THEN MAX(charged_tokens - prompt_tokens - completion_tokens, 0) * :m * {rate} ELSE 0 END)"
    )


def spent(db: sqlite3.Connection, prices: Any = None) -> tuple[int, int, float]:
    """(calls, charged tokens, charged cost) of the whole ledger, the cost repriced at ``prices``; attempts refused
    before anything was sent are not calls."""
    charged = _charged_cost_sql(cached_tokens_sql(db), batch_rate_sql(db))
    row = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(charged_tokens), 0), COALESCE(SUM({charged}), 0) FROM calls "
        "WHERE status != :refused",
        {**_price_terms(prices), "refused": REFUSED},
    ).fetchone()
    return int(row[0]), int(row[1]), float(row[2])


def pricing_label(config: TeacherConfig) -> str:
    """What :data:`PRICES_META_KEY` records for a teacher config."""
    if config.prices is not None:
        given = {"prompt": config.prices.prompt, "completion": config.prices.completion}
        if config.prices.cached_prompt is not None:  # absent otherwise: the label of a run without it is unchanged
            given["cached_prompt"] = config.prices.cached_prompt
        if config.prices.batch_api_discount != BATCH_API_DISCOUNT_DEFAULT:  # likewise; absent reads as the default
            given["batch_discount"] = config.prices.batch_api_discount  # the stored name (see PRICES_META_KEY)
        return json.dumps(given, sort_keys=True)
    if config.provider == "local" or config.free:
        return PRICES_FREE
    return PRICES_NONE


def record_pricing(db: sqlite3.Connection, config: TeacherConfig) -> None:
    """Record the prices this start runs at, so ``sedi status`` (which has no config) knows them."""
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PRICES_META_KEY, pricing_label(config)))


class _Prices:
    def __init__(
        self,
        prompt: float,
        completion: float,
        cached_prompt: float | None = None,
        batch_api_discount: float | None = None,
    ) -> None:
        self.prompt, self.completion, self.cached_prompt = prompt, completion, cached_prompt
        self.batch_api_discount = batch_api_discount


def cost_summary(db: sqlite3.Connection, meta: dict[str, str]) -> dict[str, Any]:
    """The cost fields of ``sedi status``, never lower than what the budget charged: ``cost_usd`` is the charged
    cost, exact (``cost_known: true``) unless some call was charged its worst case because its usage was not
    reported (a 200 without usage, a timeout, a refused response): then it is an upper bound (``cost_known: false``,
    ``cost_upper_bound: true``) and ``cost_reported_usd`` what the provider's reports add up to. Null, with
    ``cost_known: false`` and ``cost_upper_bound: false``, when no prices were in force."""
    label = meta.get(PRICES_META_KEY)
    prices: _Prices | None = None
    if label not in (None, PRICES_FREE, PRICES_NONE):
        try:
            given = json.loads(str(label))
            rate = given.get("cached_prompt")  # absent in a label written without it, or by an older sedi
            discount = given.get("batch_discount")  # the stored name of teacher.prices.batch_api_discount
            prices = _Prices(
                float(given["prompt"]),
                float(given["completion"]),
                None if rate is None else float(rate),
                None if discount is None else float(discount),
            )
        except (ValueError, KeyError, TypeError):
            label = PRICES_NONE  # unreadable: say unknown rather than guess
    cached, share = cached_tokens_sql(db), batch_rate_sql(db)
    row = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(MAX(cost_usd, {_reported_cost_sql(cached, share)})), 0), "
        f"COALESCE(SUM({_charged_cost_sql(cached, share)}), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0), "
        "COALESCE(SUM(error_class = :over), 0), "
        # calls charged beyond their report: the worst case of an outcome whose usage nobody reported
        "COALESCE(SUM(charged_tokens > prompt_tokens + completion_tokens), 0) FROM calls WHERE status != :refused",
        {**_price_terms(prices), "over": USAGE_OVER_RESERVATION, "refused": REFUSED},
    ).fetchone()
    calls, cost, charged, tokens, over = int(row[0]), float(row[1]), float(row[2]), int(row[3]), int(row[4])
    # A run from before prices were recorded (no meta key): its costs were computed with the prices of the
    # time, so a nonzero cost is known, while tokens at $0 may have come from a teacher without prices.
    priced = (calls == 0 or cost > 0 or tokens == 0) if label is None else label != PRICES_NONE
    bound = priced and int(row[5]) > 0 and charged > cost + 1e-12  # a free teacher's worst case is still $0
    return {
        "cost_known": priced and not bound,
        "cost_usd": round(max(cost, charged), 6) if priced else None,
        "cost_upper_bound": bound,
        "cost_reported_usd": round(cost, 6) if priced else None,
        "budget_charged_cost_usd": round(charged, 6) if priced else None,
        "unreported_usage_calls": int(row[5]),
        "usage_over_reservation_calls": over,
    }


def cost_text(summary: dict[str, Any], digits: int = 4, key: str = "cost_usd") -> str:
    """How a summary's cost (or ``usd_per_kept``) reads to a person: ``$X``, ``at most $X`` when it is an upper
    bound, or unknown without prices; never $0 for a cost nobody reported."""
    value = summary.get(key)
    if value is None:
        return "unknown (no teacher.prices)"
    if summary.get("cost_upper_bound"):
        calls = summary.get("unreported_usage_calls")
        why = f"{calls} calls without a usage report were" if calls else "calls without a usage report were"
        return f"at most ${value:,.{digits}f} ({why} charged their worst case)"
    return f"${value:,.{digits}f}"


def complete_attempt(
    db: sqlite3.Connection, call_id: int, outcome: AttemptOutcome, response: tuple[str, CachedResponse] | None
) -> None:
    """Complete a ledger row and, in the same transaction, cache the response it paid for."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "UPDATE calls SET status = ?, http_status = ?, finish_reason = ?, prompt_tokens = ?, "
            "completion_tokens = ?, cached_tokens = ?, cost_usd = ?, charged_tokens = ?, charged_cost_usd = ?, "
            "latency_s = ?, error_class = ?, error = ? WHERE id = ?",
            (
                outcome.status,
                outcome.http_status,
                _clean(outcome.finish_reason),
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.cached_tokens,
                outcome.cost_usd,
                outcome.charged.tokens,
                outcome.charged.cost_usd,
                outcome.latency_s,
                outcome.error_class,
                _clean(outcome.error),  # whoever wrote the message, no credential reaches the file
                call_id,
            ),
        )
        if response is not None:
            request_json, resp = response
            db.execute(
                "INSERT OR REPLACE INTO responses (request_key, call_id, request, text, finish_reason, "
                "prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    resp.request_key,
                    call_id,
                    request_json,
                    redact_known(resp.text),  # already blanked on receipt (teacher_outcomes.checked_text): a guard
                    _clean(resp.finish_reason),
                    resp.prompt_tokens,
                    resp.completion_tokens,
                    time.time(),
                ),
            )
        db.execute("COMMIT")  # inside the try: a full disk can refuse the commit itself
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
