"""One training round: TRL's SFTTrainer over composed batches, in their order, recording every optimizer step.

A task may have several instances (input/output pairs of one instruction): they are examples sharing the task's
id, and every one of them is a training row. A composed batch stays a list of task ids; it is expanded into the
rows of all its tasks' instances, so every instance of a task trains in the same micro-batch (the same step) as
the task. Hence a step's gradient norm is still attributable to the tasks of its composed batch, the composed
diversity is unchanged, and the recorded step ids stay task ids (each once per micro-batch). Rows per step vary
with the instance counts (a composed batch of 4 tasks with 5 instances each is a micro-batch of 20 rows); the
step loss is the mean over all supervised tokens of those rows, so a task weighs by its instances' tokens.

``train_round`` is a plain function over a model path, values and directories, so that it runs unchanged
under ``accelerate launch`` (see :mod:`feedback._launch`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from feedback.config import TrainConfig
from feedback.records import RoundResult, TrainExample, write_steps_jsonl

STEPS_FILE = "steps.jsonl"


def _check_batches(batches: list[list[int]], known: set[int], max_batch: int) -> None:
    """Fail before any model is loaded when a composed batch cannot be trained as given."""
    for number, batch in enumerate(batches):
        if not batch:
            raise ValueError(f"composed batch {number} is empty: remove empty batches before training.")
        unknown = [i for i in batch if i not in known]
        if unknown:
            raise ValueError(f"composed batch {number} names ids {unknown} that are not in examples: pass them too.")
        if len(batch) > max_batch:
            raise ValueError(
                f"composed batch {number} holds {len(batch)} tasks, more than per_device_batch_size={max_batch}: "
                "raise per_device_batch_size to the composed batch size."
            )


def _plan(batches: list[list[int]], rows_of: dict[int, list[int]]) -> list[list[int]]:
    """Row indices per composed batch, in order, each task's instances together; dropped rows are left out and
    batches left empty are skipped."""
    plan = [[row for i in batch for row in rows_of.get(i, [])] for batch in batches]
    return [rows for rows in plan if rows]


def train_round(
    student: str,
    examples: list[TrainExample],
    batches: list[list[int]],
    config: TrainConfig,
    out_dir: Path,
    adapter_dir: Path | None = None,
) -> RoundResult:
    """Train one pass over ``batches`` (lists of example ids), in order, and save the result into ``out_dir``.

    Examples sharing an id are the instances of one task: a batch naming the id trains all of them. Each
    composed batch is one micro-batch; an optimizer step spans ``gradient_accumulation_steps`` of them
    (the last step may span fewer). Examples that do not fit ``max_length`` are left out of their batch; a task
    none of whose instances is left is reported in ``dropped_ids``; a batch left empty is skipped. With
    ``adapter_dir`` the round continues that adapter (or, with lora=False, that full model); the optimizer starts
    fresh every round.

    Writes ``out_dir/adapter`` (or ``out_dir/model``) with the tokenizer, and ``out_dir/steps.jsonl``; under
    several processes every rank trains and records, and only the main process writes.
    """
    from feedback import _hf
    from feedback._trainer import ID_COLUMN

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise ValueError("no examples: pass at least one TrainExample.")
    _check_batches(batches, {ex.id for ex in examples}, config.per_device_batch_size)

    runtime = _hf.resolve_runtime(config)
    tokenizer = _hf.load_tokenizer(student)
    chat = _hf.uses_chat(config, tokenizer)
    model = _hf.load_student(student, config, runtime, adapter_dir, trainable=True)
    trainer = _hf.build_trainer(
        model, tokenizer, _hf.sft_args(config, runtime, out_dir / "trainer"), _hf.raw_dataset(examples, chat)
    )
    rows, dropped = _hf.prepare_rows(trainer, config)
    row_ids = [int(i) for i in rows[ID_COLUMN]]
    rows_of: dict[int, list[int]] = {}
    for index, row_id in enumerate(row_ids):
        rows_of.setdefault(row_id, []).append(index)
    plan = _plan(batches, rows_of)
    dropped_ids = sorted(set(dropped) - set(rows_of))

    steps = []
    if plan:
        trainer.train_dataset = rows
        trainer.composed_plan = plan
        trainer.composed_ids = [[row_ids[r] for r in batch] for batch in plan]
        if trainer.args.world_size > 1 and any(len(batch) < trainer.args.world_size for batch in plan):
            trainer.train_dataset, trainer.ghost_row = _hf.with_ghost_row(rows)
        trainer.train()
        steps = trainer.recorder.records()

    save_dir = out_dir / ("adapter" if config.lora else "model")
    if trainer.args.world_size > 1:
        # Every rank takes part: under FSDP or DeepSpeed the weights are sharded, and the Trainer gathers them
        # before the main process writes (it also writes its training_args.bin beside them).
        trainer.save_model(str(save_dir))
    else:
        trainer.model.save_pretrained(str(save_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(save_dir))
        write_steps_jsonl(steps, out_dir / STEPS_FILE)
    losses = [s.loss for s in steps]
    return RoundResult(
        steps=steps,
        dropped_ids=dropped_ids,
        adapter_path=str(save_dir),
        train_loss=sum(losses) / len(losses) if losses else math.nan,
        seconds=time.perf_counter() - started,
        device=runtime.describe(),
    )
