"""What the student is trained on and what training measured, in the run database: the round's kept tasks and
their training batches (``batches``), every optimizer step (``train_steps``) and each trained task's loss
(``example_losses``).

Read and written by :mod:`sedi.stages.training_batches`, :mod:`sedi.stages.student` and
:mod:`sedi.stages.seedpool`. Every write replaces the round's rows, so a retrained round stores the same thing again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sedi.base.vocabulary import KEPT
from sedi.store.db import RunStore


class KeptTask(NamedTuple):
    candidate_id: int
    instruction: str


class KeptInstance(NamedTuple):
    """One training row: a kept task's instruction with one of its instances (its own input and output when it has
    no instance rows)."""

    candidate_id: int
    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class BatchRow:
    """One composed training batch (``batches``): candidate ids, the clusters they span, their mean distance."""

    round: int
    index: int
    task_ids: list[int]
    clusters: int | None = None
    mean_cosine_distance: float | None = None


class BatchMeans(NamedTuple):
    clusters: float | None
    mean_cosine_distance: float | None


@dataclass(frozen=True)
class TrainStepRow:
    """One optimizer step (``train_steps``); ``step`` counts across rounds."""

    step: int
    grad_norm: float
    loss: float
    learning_rate: float
    task_ids: list[int]


def round_kept(store: RunStore, round_index: int) -> list[KeptTask]:
    """The round's kept tasks in plan order (request sample index, then position)."""
    rows = store.db.execute(
        "SELECT c.id, c.instruction FROM candidates c JOIN requests q ON q.request_key = c.request_key "
        "WHERE c.round = ? AND c.verdict = ? ORDER BY q.sample_index, c.position",
        (round_index, KEPT),
    )
    return [KeptTask(int(r[0]), str(r[1])) for r in rows]


def kept_instances(store: RunStore, round_index: int) -> list[KeptInstance]:
    """The round's kept tasks, one row per instance, by candidate id then instance index."""
    rows = store.db.execute(
        "SELECT c.id, c.instruction, COALESCE(i.input, c.input), COALESCE(i.output, c.output) FROM candidates c "
        "LEFT JOIN instances i ON i.candidate_id = c.id WHERE c.round = ? AND c.verdict = ? "
        "ORDER BY c.id, i.idx",
        (round_index, KEPT),
    )
    return [KeptInstance(int(r[0]), r[1], r[2], r[3]) for r in rows]


def replace_batches(store: RunStore, round_index: int, rows: Sequence[BatchRow]) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM batches WHERE round = ?", (round_index,))
        db.executemany(
            "INSERT INTO batches (round, batch_index, task_ids, clusters, mean_cosine_distance) VALUES (?, ?, ?, ?, ?)",
            [(b.round, b.index, json.dumps(b.task_ids), b.clusters, b.mean_cosine_distance) for b in rows],
        )


def round_batches(store: RunStore, round_index: int) -> list[list[int]]:
    rows = store.db.execute("SELECT task_ids FROM batches WHERE round = ? ORDER BY batch_index", (round_index,))
    return [json.loads(r[0]) for r in rows]


def batch_means(store: RunStore, round_index: int) -> BatchMeans:
    """The mean clusters and mean cosine distance of the round's batches (None without composed batches)."""
    clusters, distance = store.db.execute(
        "SELECT AVG(clusters), AVG(mean_cosine_distance) FROM batches WHERE round = ?", (round_index,)
    ).fetchone()
    return BatchMeans(clusters, distance)


def train_steps(store: RunStore) -> list[TrainStepRow]:
    """Every optimizer step of the run, in order."""
    rows = store.db.execute("SELECT step, grad_norm, loss, learning_rate, task_ids FROM train_steps ORDER BY step")
    return [TrainStepRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def last_step(store: RunStore, before_round: int | None = None) -> int:
    """The highest step number recorded (of rounds before ``before_round``); 0 when there is none."""
    if before_round is None:
        row = store.db.execute("SELECT COALESCE(MAX(step), 0) FROM train_steps").fetchone()
    else:
        row = store.db.execute("SELECT COALESCE(MAX(step), 0) FROM train_steps WHERE round < ?", (before_round,))
        row = row.fetchone()
    return int(row[0])


def replace_train_steps(store: RunStore, round_index: int, steps: Sequence[TrainStepRow]) -> None:
    """The round's steps, replacing any an earlier try of the round wrote. Call inside ``store.transaction()`` to
    commit them with other writes; outside one each statement commits on its own."""
    store.db.execute("DELETE FROM train_steps WHERE round = ?", (round_index,))
    store.db.executemany(
        "INSERT INTO train_steps (round, step, grad_norm, loss, learning_rate, task_ids) VALUES (?, ?, ?, ?, ?, ?)",
        [(round_index, s.step, s.grad_norm, s.loss, s.learning_rate, json.dumps(s.task_ids)) for s in steps],
    )


def replace_example_losses(store: RunStore, round_index: int, losses: Mapping[int, float]) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM example_losses WHERE round = ?", (round_index,))
        db.executemany(
            "INSERT INTO example_losses (round, task_id, loss) VALUES (?, ?, ?)",
            [(round_index, task, loss) for task, loss in sorted(losses.items())],
        )


def example_losses(store: RunStore, through_round: int) -> dict[int, float]:
    """Each task's loss after the latest round up to ``through_round`` that measured it."""
    rows = store.db.execute(
        "SELECT task_id, loss FROM example_losses WHERE round <= ? ORDER BY round", (through_round,)
    )
    return {int(r[0]): float(r[1]) for r in rows}
