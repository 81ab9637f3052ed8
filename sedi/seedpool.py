"""The seed pool and the feedback stage: attractive batches promote their tasks, weak seeds are demoted.

The pool starts as the human seeds. For ``method: sedi`` it is what later prompts sample from: human seeds
for the human slots, promoted machine tasks for the machine slots. Every promotion and demotion is stored
in ``seed_history`` with the step, the round, the signal value and the reason, in the same transaction
that changes the pool and marks the steps attractive, so a crash never leaves half a decision.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from feedback import PoolEntry, StepRecord, demotions, promotions, select_attractive
from sedi._faults import crash_point
from sedi.config import SediConfig
from sedi.export import task_id
from sedi.store import RunStore
from sedi.tasks import Task


def init_pool(store: RunStore, human: list[Task]) -> None:
    with store.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO seed_pool (task_id, origin, instruction, input, output) "
            "VALUES (?, 'human', ?, ?, ?)",
            [(t.id, t.instruction, t.input, t.output) for t in human],
        )


def active_pool(store: RunStore) -> tuple[list[Task], list[Task]]:
    """(human, machine) seeds currently in the pool, in insertion order."""
    rows = store.db.execute(
        "SELECT task_id, instruction, input, output, origin FROM seed_pool WHERE active = 1 ORDER BY rowid"
    ).fetchall()
    tasks = [Task(r[0], r[1], r[2], r[3], origin=r[4]) for r in rows]
    return [t for t in tasks if t.origin == "human"], [t for t in tasks if t.origin == "machine"]


def _pool_entries(store: RunStore) -> tuple[list[PoolEntry], dict[int, str]]:
    """Pool seeds as feedback's plain records: offspring counts from the prompts that showed each seed,
    gradient norms of the steps that trained each machine seed. Returns the entries and id -> task_id."""
    db = store.db
    offspring: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    verdicts = db.execute(
        "SELECT q.context, COUNT(c.id), COALESCE(SUM(c.verdict = 'rejected'), 0) FROM requests q "
        "JOIN candidates c ON c.request_key = q.request_key WHERE q.kind = 'tasks' GROUP BY q.request_key"
    )
    for context, total, rejected in verdicts:
        for shown in json.loads(context):
            offspring[shown][0] += total
            offspring[shown][1] += rejected
    norms: dict[int, list[float]] = defaultdict(list)
    for grad_norm, ids in db.execute("SELECT grad_norm, task_ids FROM train_steps"):
        for i in json.loads(ids):
            norms[int(i)].append(float(grad_norm))
    entries, names = [], {}
    rows = db.execute("SELECT task_id, origin, added_round FROM seed_pool WHERE active = 1 ORDER BY rowid")
    for index, (name, origin, added) in enumerate(rows.fetchall()):
        candidate = int(name.split("-", 1)[1]) if origin == "machine" else None
        total, rejected = offspring[name]
        entries.append(
            PoolEntry(
                id=index,
                origin=origin,
                added_round=added or 0,
                offspring_total=total,
                offspring_rejected=rejected,
                batch_grad_norms=norms.get(candidate, []) if candidate is not None else [],
            )
        )
        names[index] = name
    return entries, names


def apply_feedback(
    store: RunStore,
    config: SediConfig,
    round_index: int,
    steps: list[StepRecord],
    example_loss: dict[int, float] | None = None,
) -> tuple[int, int]:
    """Promote the tasks of the round's attractive batches, then demote to the cap, and mark the round's
    feedback done, all in one transaction; returns (promotions, demotions)."""
    fb = config.feedback
    attractive = select_attractive(steps, fb.interval, fb.selector)
    trained = {i for s in steps for i in s.ids}
    entries, names = _pool_entries(store)
    in_pool = set(names.values())
    promoted = [
        p for p in promotions(attractive, trained, example_loss, fb.promote, fb.top_k) if task_id(p.id) not in in_pool
    ]
    norms = {i: [s.grad_norm for s in steps if i in s.ids] for i in trained}
    for p in promoted:  # the newcomers compete for the pool's places too
        names[len(entries)] = task_id(p.id)
        entries.append(
            PoolEntry(id=len(entries), origin="machine", added_round=round_index, batch_grad_norms=norms[p.id])
        )
    demoted = demotions(entries, fb.max_pool_size, fb.protect_human)
    now = time.time()
    with store.transaction() as db:
        db.executemany(
            "UPDATE train_steps SET attractive = 1 WHERE round = ? AND step = ?",
            [(round_index, a.step) for a in attractive],
        )
        for p in promoted:
            db.execute(
                "INSERT OR IGNORE INTO seed_pool (task_id, origin, instruction, input, output, added_round) "
                "SELECT ?, 'machine', instruction, input, output, ? FROM candidates WHERE id = ?",
                (task_id(p.id), round_index, p.id),
            )
        history: list[tuple[str, str, int | None, float, str]]
        history = [(task_id(p.id), "promote", p.step, p.value, p.reason) for p in promoted]
        history += [(names[d.id], "demote", None, d.value, d.reason) for d in demoted]
        db.executemany(
            "INSERT INTO seed_history (task_id, action, round, step, signal, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(name, action, round_index, step, value, reason, now) for name, action, step, value, reason in history],
        )
        db.executemany("UPDATE seed_pool SET active = 0 WHERE task_id = ?", [(names[d.id],) for d in demoted])
        db.execute("INSERT OR REPLACE INTO rounds (round, stage, updated_at) VALUES (?, 'fed', ?)", (round_index, now))
        crash_point(f"feedback:{round_index}")  # tests: killed mid-transaction, nothing of it may survive
    return len(promoted), len(demoted)


def record_pool_metrics(store: RunStore, round_index: int) -> None:
    size, machine = store.db.execute(
        "SELECT COUNT(*), COALESCE(SUM(origin = 'machine'), 0) FROM seed_pool WHERE active = 1"
    ).fetchone()
    store.db.executemany(
        "INSERT OR REPLACE INTO round_metrics (round, name, value) VALUES (?, ?, ?)",
        [(round_index, "seed_pool_size", float(size)), (round_index, "seed_pool_machine", float(machine))],
    )
