"""One training round: TRL's SFTTrainer over composed batches, in their order, recording every optimizer step.

``train_round`` is a plain function over a model path, values and directories, so that it can later run
under ``accelerate launch`` unchanged (recording assumes one process: with several, each rank would see
only its shard of every composed batch).
"""

from __future__ import annotations

import math
import time
from collections import Counter
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


def _plan(batches: list[list[int]], row_of: dict[int, int]) -> list[list[int]]:
    """Row indices per composed batch, in order; dropped ids are left out and batches left empty are skipped."""
    plan = [[row_of[i] for i in batch if i in row_of] for batch in batches]
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

    Each composed batch is one micro-batch; an optimizer step spans ``gradient_accumulation_steps`` of them
    (the last step may span fewer). Examples that do not fit ``max_length`` are left out of their batch and
    reported in ``dropped_ids``; a batch left empty is skipped. With ``adapter_dir`` the round continues that
    adapter (or, with lora=False, that full model); the optimizer starts fresh every round.

    Writes ``out_dir/adapter`` (or ``out_dir/model``) with the tokenizer, and ``out_dir/steps.jsonl``.
    """
    from feedback import _hf
    from feedback._trainer import ID_COLUMN

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [ex.id for ex in examples]
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"example ids {duplicates} occur more than once: give every task a unique id.")
    if not examples:
        raise ValueError("no examples: pass at least one TrainExample.")
    _check_batches(batches, set(ids), config.per_device_batch_size)

    runtime = _hf.resolve_runtime(config)
    tokenizer = _hf.load_tokenizer(student)
    chat = _hf.uses_chat(config, tokenizer)
    model = _hf.load_student(student, config, runtime, adapter_dir, trainable=True)
    trainer = _hf.build_trainer(
        model, tokenizer, _hf.sft_args(config, runtime, out_dir / "trainer"), _hf.raw_dataset(examples, chat)
    )
    rows, dropped = _hf.prepare_rows(trainer, config)
    row_of = {int(row_id): index for index, row_id in enumerate(rows[ID_COLUMN])}
    plan = _plan(batches, row_of)
    dropped_ids = sorted(dropped)

    steps = []
    if plan:
        trainer.train_dataset = rows
        trainer.composed_plan = plan
        trainer.train()
        steps = trainer.recorder.records()

    save_dir = out_dir / ("adapter" if config.lora else "model")
    trainer.model.save_pretrained(str(save_dir))
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
