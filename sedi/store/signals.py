"""Per-task training signals, read from the run database for ``sedi export``'s signal columns.

What the loop measured about each kept task while training on it:

- ``train_round``: the round whose training batches held it (null for a task never trained, e.g. under
  ``method: self-instruct``, or kept in a round that has not trained yet);
- ``train_step``: the global optimizer step that trained it (the first, if several epochs did);
- ``step_loss``: the mean training loss of that step (over its batch, as the trainer logged it; the mean over the
  task's steps if several);
- ``grad_norm``: the total gradient norm of that step before clipping (the largest over its steps), the signal
  that picks attractive batches;
- ``attractive``: whether a step that trained it was its feedback window's attractive batch (its tasks joined
  the seed pool);
- ``example_loss``: the task's own per-example loss under the adapter of the round that trained it, measured only
  when ``feedback.promote`` is ``top_k`` (null otherwise).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

_STEPS_SQL = "SELECT round, step, grad_norm, loss, task_ids, attractive FROM train_steps ORDER BY round, step"
# The latest measurement of a task wins: a later round may measure a task that an earlier round trained.
_LOSSES_SQL = "SELECT task_id, loss FROM example_losses ORDER BY round"


@dataclass(frozen=True)
class TaskSignals:
    """What training measured about one task (see the module docstring for each field)."""

    train_round: int | None = None
    train_step: int | None = None
    step_loss: float | None = None
    grad_norm: float | None = None
    attractive: bool = False
    example_loss: float | None = None


SIGNAL_COLUMNS = tuple(TaskSignals.__dataclass_fields__)


def task_signals(db: sqlite3.Connection) -> dict[int, TaskSignals]:
    """Every trained task's signals by candidate id (a task never trained is absent)."""
    steps: dict[int, list[tuple[int, int, float | None, float | None, bool]]] = {}
    for round_index, step, grad_norm, loss, task_ids, attractive in db.execute(_STEPS_SQL):
        for task in set(json.loads(task_ids)):
            steps.setdefault(int(task), []).append((round_index, step, grad_norm, loss, bool(attractive)))
    losses = {int(task): float(loss) for task, loss in db.execute(_LOSSES_SQL)}
    signals = {}
    for task in steps.keys() | losses.keys():
        mine = steps.get(task, [])
        norms = [s[2] for s in mine if s[2] is not None]
        step_losses = [s[3] for s in mine if s[3] is not None]
        signals[task] = TaskSignals(
            train_round=mine[0][0] if mine else None,
            train_step=mine[0][1] if mine else None,
            step_loss=sum(step_losses) / len(step_losses) if step_losses else None,
            grad_norm=max(norms) if norms else None,
            attractive=any(s[4] for s in mine),
            example_loss=losses.get(task),
        )
    return signals
