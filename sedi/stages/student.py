"""The train stage: one short round of the student on the round's batches, continuing the same adapter,
and the held-out evaluation measured the same way for both methods.

Steps are numbered across rounds (round 2 continues where round 1 stopped), so "every 10 steps" and the
report's gradient-norm plot read as one training run. The adapter of round r lives in
``RUN_DIR/student/round-r/``; a round killed mid-training is retrained from the previous round's adapter,
with the same seed and the same batches. With ``student.processes > 1`` the round trains in that many processes
(:mod:`feedback._launch`): the same steps, ids and gradient norms (to float rounding); a killed launch leaves no
``done`` marker either, so it is retrained the same way.

Every instance of a kept task is trained on: each is a training row under the task's id, and the trainer puts
all of a task's rows in the micro-batch of the composed batch that names the task (:mod:`feedback.training`).
Batches therefore stay sets of task ids (their diversity is the one composed), rows per step vary with the
instance counts, the recorded step ids are task ids that feedback decides on, and a task's per-example loss is
the mean over its instances. Held-out evaluation is unchanged: it scores the held-out tasks, one row each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from statistics import fmean
from typing import Any

from diversity import rouge_l_f1
from feedback import (
    StepRecord,
    TrainConfig,
    TrainExample,
    greedy_answers,
    launch_round,
    per_example_loss,
    train_round,
)
from sedi.base.hardware import release_memory
from sedi.config.model import SediConfig
from sedi.config.seeds import Task
from sedi.store import training
from sedi.store.dataset import user_turn
from sedi.store.db import RunStore
from sedi.store.training import TrainStepRow

# Held while this process loads and runs a student (train, per-example losses, held-out evaluation): unset in a
# solo run; sedi.experiment.parallel may set a semaphore shared by the runs it runs at once (``limit_students``).
_student_gate: AbstractContextManager[Any] = nullcontext()


def limit_students(gate: AbstractContextManager[Any]) -> None:
    """Hold ``gate`` (e.g. a semaphore shared with other processes) around every use of the student here."""
    global _student_gate
    _student_gate = gate


@contextmanager
def _student() -> Iterator[None]:
    """Around every use of the student: the gate (one at a time across a comparison's processes, when set), then
    the memory it took handed back, so that a run between two rounds holds no training's peak."""
    try:
        with _student_gate:
            yield
    finally:
        release_memory()


def student_path(config: SediConfig) -> str:
    """A directory transformers can load: the bundled model is converted once into the cache."""
    if config.student.model == "gemma-3-270m":
        from sedi.serve import bundled_model_dir

        return str(bundled_model_dir())
    return config.student.model


def train_config(config: SediConfig) -> TrainConfig:
    # A plain TrainConfig (the student's excludes the seed from dumps, and the launcher passes a dump on).
    return TrainConfig.model_validate({**config.student.train.model_dump(), "seed": config.run.seed})


def _round_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / "student" / f"round-{round_index}"


def latest_adapter(run_dir: Path, before_round: int) -> Path | None:
    """The adapter the next round continues: that of the latest earlier round that trained."""
    for r in range(before_round - 1, -1, -1):
        saved = _round_dir(run_dir, r) / "adapter"
        if not saved.is_dir():
            saved = _round_dir(run_dir, r) / "model"
        if saved.is_dir() and (_round_dir(run_dir, r) / "done").is_file():
            return saved
    return None


def round_examples(store: RunStore, round_index: int) -> list[TrainExample]:
    """The round's kept tasks as training examples, one per instance (the task's own input and output when it
    has no instance rows), all keyed by the task's candidate id."""
    return [
        TrainExample(id=r.candidate_id, prompt=user_turn(r.instruction, r.input), completion=r.output)
        for r in training.kept_instances(store, round_index)
    ]


def round_batches(store: RunStore, round_index: int) -> list[list[int]]:
    return training.round_batches(store, round_index)


def train(store: RunStore, config: SediConfig, round_index: int, *, losses: bool = True) -> list[StepRecord]:
    """Train on the round's batches; record every optimizer step (global step numbers) in ``train_steps`` and,
    with ``losses``, each trained task's loss under the new adapter in ``example_losses``. Only
    ``feedback.promote: top_k`` reads those losses, and measuring them loads the student a second time each
    round, so the loop asks for them only then."""
    examples, batches = round_examples(store, round_index), round_batches(store, round_index)
    if not examples or not batches:
        return []
    run_dir = store.run_dir
    out = _round_dir(run_dir, round_index)
    (out / "done").unlink(missing_ok=True)
    inputs = (student_path(config), examples, batches, train_config(config), out, latest_adapter(run_dir, round_index))
    with _student():
        if config.student.processes > 1:
            result = launch_round(*inputs, config.student.processes, config.student.accelerate_config)
        else:
            result = train_round(*inputs)
    first = training.last_step(store, before_round=round_index)
    steps = [s.model_copy(update={"step": first + s.step}) for s in result.steps]
    rows = [TrainStepRow(s.step, s.grad_norm, s.loss, s.learning_rate, s.ids) for s in steps]
    with store.transaction():
        training.replace_train_steps(store, round_index, rows)
        store.record_metrics(round_index, {"train_dropped": float(len(result.dropped_ids))})
    if losses:
        _record_losses(store, config, round_index, result.adapter_path, examples)
    (out / "done").write_text(result.device)
    return steps


def _record_losses(
    store: RunStore, config: SediConfig, round_index: int, adapter: str, examples: list[TrainExample]
) -> None:
    with _student():
        measured = per_example_loss(student_path(config), adapter, examples, train_config(config))
    training.replace_example_losses(store, round_index, measured)


def example_losses(store: RunStore, through_round: int) -> dict[int, float]:
    """Each trained task's per-example loss after the latest round (up to ``through_round``) that measured it:
    a feedback window can span rounds, so its attractive batch may hold an earlier round's tasks."""
    return training.example_losses(store, through_round)


def evaluate(store: RunStore, config: SediConfig, round_index: int, heldout: list[Task]) -> float | None:
    """Mean per-example loss of the current student on the held-out tasks (None when nothing is trained),
    and the mean ROUGE-L F1 of its greedy answers on the first ``student.heldout_generate`` of them."""
    tasks = heldout[: config.student.heldout_size]
    adapter = latest_adapter(store.run_dir, round_index + 1)
    if not tasks or adapter is None:
        return None
    examples = [
        TrainExample(id=i, prompt=user_turn(t.instruction, t.input), completion=t.output) for i, t in enumerate(tasks)
    ]
    with _student():
        losses = per_example_loss(student_path(config), adapter, examples, train_config(config))
    value = fmean(losses.values()) if losses else None
    metrics = {"heldout_loss": value}
    answered = examples[: config.student.heldout_generate]
    if answered:
        with _student():
            answers = greedy_answers(
                student_path(config),
                adapter,
                {ex.id: ex.prompt for ex in answered},
                train_config(config),
                config.student.heldout_max_new_tokens,
            )
        metrics["heldout_rouge_l"] = fmean(rouge_l_f1(answers[ex.id], ex.completion) for ex in answered)
    store.record_metrics(round_index, {name: v for name, v in metrics.items() if v is not None})
    return value
