"""Rows of a synthetic run, written straight into the tables for :mod:`benchmarks.sample_run` (a run to look at
``sedi report`` without paying a teacher). Real runs never call these: they write through the ledger, the
candidates and the stages, which these rows imitate with fixed, plausible values.
"""

from __future__ import annotations

from sedi.base.vocabulary import KEPT, CallStatus, RequestKind, SeedAction
from sedi.store.db import RunStore


def call(
    store: RunStore, request_key: str, status: CallStatus, tokens: tuple[int, int], cost_usd: float, started_at: float
) -> int:
    """A finished ledger row of ``test-teacher`` (prompt and completion tokens); returns its call id."""
    cur = store.db.execute(
        "INSERT INTO calls (request_key, attempt, model, endpoint, status, prompt_tokens, completion_tokens, "
        "cost_usd, started_at) VALUES (?, 0, 'test-teacher', 'completions', ?, ?, ?, ?, ?)",
        (request_key, status, *tokens, cost_usd, started_at),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def answered_request(store: RunStore, request_key: str, round_index: int, kind: RequestKind, call_id: int) -> None:
    """A planned request and the cached response call ``call_id`` paid for."""
    store.db.execute(
        "INSERT INTO requests (request_key, round, kind, sample_index) VALUES (?, ?, ?, 0)",
        (request_key, round_index, kind),
    )
    store.db.execute(
        "INSERT INTO responses (request_key, call_id, request, text, prompt_tokens, completion_tokens, created_at) "
        "VALUES (?, ?, '{}', 'text', 1, 1, 0)",
        (request_key, call_id),
    )


def candidate(
    store: RunStore, request_key: str, position: int, round_index: int, verdict: str, rule: str | None
) -> None:
    """A candidate ``Task number <position>.``; a kept one joined the similarity pool."""
    store.db.execute(
        "INSERT INTO candidates (request_key, position, round, instruction, verdict, rule, pooled) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (request_key, position, round_index, f"Task number {position}.", verdict, rule, int(verdict == KEPT)),
    )


def train_step(store: RunStore, round_index: int, step: int, grad_norm: float, loss: float, attractive: bool) -> None:
    """An optimizer step over tasks 1 and 2 at learning rate 2e-4."""
    store.db.execute(
        "INSERT INTO train_steps (round, step, grad_norm, loss, learning_rate, task_ids, attractive) "
        "VALUES (?, ?, ?, ?, 2e-4, '[1, 2]', ?)",
        (round_index, step, grad_norm, loss, int(attractive)),
    )


def seed_move(store: RunStore, task_id: str, action: SeedAction, round_index: int) -> None:
    """A promotion or demotion at step 4 with signal 0.5."""
    store.db.execute(
        "INSERT INTO seed_history (task_id, action, round, step, signal, reason, created_at) "
        "VALUES (?, ?, ?, 4, 0.5, 'test', 0)",
        (task_id, action, round_index),
    )
