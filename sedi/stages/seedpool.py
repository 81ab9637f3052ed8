"""The seed pool and the feedback stage: attractive batches promote their tasks, weak seeds leave.

The pool starts as the human seeds. For ``method: sedi`` it is what later prompts sample from (see
:mod:`sedi.stages.steering`). Feedback windows are counted over the whole run's optimizer steps: the last step whose
window is decided is kept in ``meta.feedback_through``, so a window left open by one round is decided by the
next, and :func:`settle` decides the last partial window when the run ends. Every promotion and demotion is
stored in ``seed_history`` with the step, the round, the signal value and the reason, in the same transaction
that changes the pool, marks the steps attractive and moves ``feedback_through``, so a crash never leaves half
a decision.
"""

from __future__ import annotations

import time
from collections import defaultdict

from feedback import PoolEntry, StepRecord, decided_through, demotions, promotions, select_attractive, weak_seeds
from sedi.base.faults import crash_point
from sedi.base.vocabulary import DEMOTE, HUMAN, MACHINE, PROMOTE, REJECTED
from sedi.config.model import SediConfig
from sedi.config.seeds import Task
from sedi.store import seeds, training
from sedi.store.candidates import candidate_id_of, machine_task_id
from sedi.store.db import RunStore
from sedi.store.seeds import SeedMove


def init_pool(store: RunStore, human: list[Task]) -> None:
    seeds.add_human_seeds(store, human)


def active_pool(store: RunStore) -> tuple[list[Task], list[Task]]:
    """(human, machine) seeds currently in the pool, in insertion order."""
    tasks = seeds.active_seeds(store)
    return [t for t in tasks if t.origin == HUMAN], [t for t in tasks if t.origin == MACHINE]


def pool_tasks(store: RunStore) -> dict[str, Task]:
    """Every task that was ever in the pool, active or not, by task id (to replay a recorded plan)."""
    return {t.id: t for t in seeds.every_seed(store)}


def all_steps(store: RunStore) -> list[StepRecord]:
    return [
        StepRecord(step=r.step, grad_norm=r.grad_norm, loss=r.loss, learning_rate=r.learning_rate, ids=r.task_ids)
        for r in training.train_steps(store)
    ]


def _offspring(store: RunStore, steps: list[StepRecord]) -> dict[str, tuple[int, int, list[float]]]:
    """Per seed shown in a prompt: (offspring, rejected offspring, training-signal values of judged offspring).

    A judged offspring's value is 0 when rejected, else the gradient norm of the step that trained it over the
    run's mean step norm; kept offspring not trained (yet) and pending ones are not judged."""
    norms = [s.grad_norm for s in steps if s.grad_norm == s.grad_norm]
    mean = sum(norms) / len(norms) if norms else 0.0
    trained = {i: s.grad_norm / mean for s in steps for i in s.ids if mean > 0 and s.grad_norm == s.grad_norm}
    out: dict[str, tuple[int, int, list[float]]] = defaultdict(lambda: (0, 0, []))
    for child in seeds.offspring(store):
        value = 0.0 if child.verdict == REJECTED else trained.get(child.candidate_id)
        for shown in child.shown:
            total, rejected, values = out[shown]
            if value is not None:
                values.append(value)
            out[shown] = (total + 1, rejected + (child.verdict == REJECTED), values)
    return out


def _pool_entries(store: RunStore, steps: list[StepRecord]) -> tuple[list[PoolEntry], dict[int, str]]:
    """Active pool seeds as feedback's plain records, and id -> task_id."""
    offspring = _offspring(store, steps)
    norms: dict[int, list[float]] = defaultdict(list)
    for step in steps:
        for i in step.ids:
            norms[int(i)].append(float(step.grad_norm))
    entries, names = [], {}
    for index, (name, origin, added) in enumerate(seeds.pool_seeds(store)):
        candidate = candidate_id_of(name) if origin == MACHINE else None
        total, rejected, values = offspring.get(name, (0, 0, []))
        entries.append(
            PoolEntry(
                id=index,
                origin=origin,
                added_round=added or 0,
                offspring_total=total,
                offspring_rejected=rejected,
                batch_grad_norms=norms.get(candidate, []) if candidate is not None else [],
                offspring_signal=sum(values) / len(values) if values else None,
                offspring_judged=len(values),
            )
        )
        names[index] = name
    return entries, names


def apply_feedback(
    store: RunStore,
    config: SediConfig,
    round_index: int,
    example_loss: dict[int, float] | None = None,
    *,
    final: bool = False,
) -> tuple[int, int]:
    """Decide every feedback window completed since the last decision (with ``final``, the open one too):
    promote the tasks of their attractive batches, let the weakest seeds leave once per window, demote to the
    cap, and (unless ``final``) mark the round's feedback done, all in one transaction; returns (promotions,
    demotions)."""
    fb = config.feedback
    steps = all_steps(store)
    after = int(store.get_meta("feedback_through", "0") or 0)
    attractive = select_attractive(steps, fb.interval, fb.selector, after=after, final=final)
    through = decided_through(steps, fb.interval, after=after, final=final)
    cycles = -(-(through - after) // fb.interval)
    trained = {i for s in steps for i in s.ids}
    entries, names = _pool_entries(store, steps)
    in_pool = seeds.seed_ids(store)
    promoted = [
        p
        for p in promotions(attractive, trained, example_loss, fb.promote, fb.top_k)
        if machine_task_id(p.id) not in in_pool
    ]
    demoted = []
    if fb.demote == "offspring_signal":
        for _ in range(cycles):  # one feedback cycle per decided window
            out = weak_seeds(entries, fb.demote_per_cycle, fb.min_evidence, fb.protect_human)
            demoted += out
            entries = [e for e in entries if e.id not in {d.id for d in out}]
    norms = {i: [s.grad_norm for s in steps if i in s.ids] for i in trained}
    for p in promoted:  # the newcomers compete for the pool's places too
        names[len(names)] = machine_task_id(p.id)
        entries.append(
            PoolEntry(id=len(names) - 1, origin=MACHINE, added_round=round_index, batch_grad_norms=norms[p.id])
        )
    demoted += demotions(entries, fb.max_pool_size, fb.protect_human)
    now = time.time()
    with store.transaction():
        seeds.mark_attractive(store, [a.step for a in attractive])
        seeds.promote(store, round_index, [(machine_task_id(p.id), p.id) for p in promoted])
        history = [SeedMove(machine_task_id(p.id), PROMOTE, p.step, p.value, p.reason) for p in promoted]
        history += [SeedMove(names[d.id], DEMOTE, None, d.value, d.reason) for d in demoted]
        seeds.record_moves(store, round_index, history, now)
        seeds.deactivate(store, [names[d.id] for d in demoted])
        store.set_meta("feedback_through", str(through))
        store.record_metrics(round_index, {"attractive_windows": float(len(attractive))}, accumulate=True)
        if not final:
            store.mark_round(round_index, "fed")
        crash_point(f"feedback:{round_index}")  # tests: killed mid-transaction, nothing of it may survive
    return len(promoted), len(demoted)


def settle(store: RunStore, config: SediConfig, round_index: int) -> bool:
    """At the end of a run: decide the last, partial feedback window (if any step is undecided)."""
    after = int(store.get_meta("feedback_through", "0") or 0)
    if training.last_step(store) <= after:
        return False
    apply_feedback(store, config, round_index, final=True)
    return True


def record_pool_metrics(store: RunStore, round_index: int) -> None:
    size, machine = seeds.pool_size(store)
    store.record_metrics(round_index, {"seed_pool_size": float(size), "seed_pool_machine": float(machine)})
