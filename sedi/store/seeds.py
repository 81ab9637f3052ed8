"""The seed pool and its history in the run database: which tasks later prompts may show, what feedback decided.

Read and written by :mod:`sedi.stages.seedpool` (the feedback stage) and :mod:`sedi.stages.steering` (the in-context
picker). The writes run on the store's one connection, so inside ``with store.transaction():`` they belong to that
transaction: feedback's promotions, demotions, history rows and ``meta.feedback_through`` commit together or not
at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sedi.base.vocabulary import HUMAN, KEPT, MACHINE, REJECTED, TASKS, SeedAction, SeedOrigin
from sedi.config.seeds import Task
from sedi.store.db import RunStore

_TASK_COLUMNS = "task_id, instruction, input, output, origin"


class PoolSeed(NamedTuple):
    """An active seed as feedback weighs it."""

    task_id: str
    origin: SeedOrigin
    added_round: int | None


class Offspring(NamedTuple):
    """A candidate from a generation request, with the seeds that request showed (its context)."""

    shown: list[str]
    candidate_id: int
    verdict: str  # a VerdictName, or 'new' before the filters decided


class PoolSize(NamedTuple):
    active: int
    machine: int


@dataclass(frozen=True)
class SeedMove:
    """One promotion or demotion, as ``seed_history`` keeps it."""

    task_id: str
    action: SeedAction
    step: int | None
    signal: float
    reason: str


def add_human_seeds(store: RunStore, human: Iterable[Task]) -> None:
    """Put the human seeds in the pool (a seed already there stays as it is)."""
    with store.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO seed_pool (task_id, origin, instruction, input, output) VALUES (?, ?, ?, ?, ?)",
            [(t.id, HUMAN, t.instruction, t.input, t.output) for t in human],
        )


def active_seeds(store: RunStore) -> list[Task]:
    """The seeds in the pool now, in insertion order."""
    rows = store.db.execute(f"SELECT {_TASK_COLUMNS} FROM seed_pool WHERE active = 1 ORDER BY rowid")
    return [Task(r[0], r[1], r[2], r[3], origin=r[4]) for r in rows.fetchall()]


def every_seed(store: RunStore) -> list[Task]:
    """Every task that was ever in the pool, active or not."""
    return [
        Task(r[0], r[1], r[2], r[3], origin=r[4]) for r in store.db.execute(f"SELECT {_TASK_COLUMNS} FROM seed_pool")
    ]


def seed_ids(store: RunStore) -> set[str]:
    """The task ids of every task that was ever in the pool."""
    return {str(name) for (name,) in store.db.execute("SELECT task_id FROM seed_pool")}


def pool_seeds(store: RunStore) -> list[PoolSeed]:
    """The active seeds in insertion order, as feedback weighs them."""
    rows = store.db.execute("SELECT task_id, origin, added_round FROM seed_pool WHERE active = 1 ORDER BY rowid")
    return [PoolSeed(str(name), origin, added) for name, origin, added in rows.fetchall()]


def pool_size(store: RunStore) -> PoolSize:
    size, machine = store.db.execute(
        "SELECT COUNT(*), COALESCE(SUM(origin = ?), 0) FROM seed_pool WHERE active = 1", (MACHINE,)
    ).fetchone()
    return PoolSize(int(size), int(machine))


def offspring(store: RunStore) -> list[Offspring]:
    """Every candidate of a generation request, with the seeds its prompt showed."""
    rows = store.db.execute(
        "SELECT q.context, c.id, c.verdict FROM requests q JOIN candidates c ON c.request_key = q.request_key "
        "WHERE q.kind = ?",
        (TASKS,),
    )
    return [Offspring(json.loads(context), int(cid), str(verdict)) for context, cid, verdict in rows]


class Credit(NamedTuple):
    """One generation request of an earlier round: the seeds it showed, its kept and rejected candidates."""

    shown: list[str]
    kept: int
    rejected: int


def credit(store: RunStore, before_round: int) -> list[Credit]:
    """Per generation request of rounds before ``before_round``: what it showed and how its candidates fared."""
    rows = store.db.execute(
        "SELECT q.context, COALESCE(SUM(c.verdict = ?), 0), COALESCE(SUM(c.verdict = ?), 0) "
        "FROM requests q LEFT JOIN candidates c ON c.request_key = q.request_key "
        "WHERE q.kind = ? AND q.round < ? GROUP BY q.request_key",
        (KEPT, REJECTED, TASKS, before_round),
    )
    return [Credit(json.loads(context), int(k), int(r)) for context, k, r in rows]


# -- feedback's decision: call inside one ``with store.transaction():`` -------------------------------------------
def mark_attractive(store: RunStore, steps: Iterable[int]) -> None:
    store.db.executemany("UPDATE train_steps SET attractive = 1 WHERE step = ?", [(step,) for step in steps])


def promote(store: RunStore, round_index: int, promoted: Sequence[tuple[str, int]]) -> None:
    """Add candidates to the pool as machine seeds: (task id, candidate id) each, in round ``round_index``."""
    for task_id, candidate in promoted:
        store.db.execute(
            "INSERT OR IGNORE INTO seed_pool (task_id, origin, instruction, input, output, added_round) "
            "SELECT ?, ?, instruction, input, output, ? FROM candidates WHERE id = ?",
            (task_id, MACHINE, round_index, candidate),
        )


def record_moves(store: RunStore, round_index: int, moves: Sequence[SeedMove], now: float) -> None:
    store.db.executemany(
        "INSERT INTO seed_history (task_id, action, round, step, signal, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(m.task_id, m.action, round_index, m.step, m.signal, m.reason, now) for m in moves],
    )


def deactivate(store: RunStore, task_ids: Iterable[str]) -> None:
    store.db.executemany("UPDATE seed_pool SET active = 0 WHERE task_id = ?", [(name,) for name in task_ids])
