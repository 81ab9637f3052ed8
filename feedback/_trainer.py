"""An ``SFTTrainer`` that trains composed batches in order and records every optimizer step.

Three small pieces, each with one job:

- :class:`ComposedBatches` is the batch sampler: one micro-batch per composed batch, in the given order,
  nothing shuffled or dropped (the Trainer's own sampler would shuffle and use a fixed batch size). Under
  several processes each rank takes its contiguous slice of every composed batch, so the global micro-batch
  is the composed batch; a rank whose slice is empty trains a ghost row without a supervised token (it adds
  nothing to the loss or the gradient, but keeps the ranks' gradient all-reduces in step).
- :class:`IdCollator` wraps TRL's collator: it takes the ``id`` column off each row and puts the micro-batch's
  ids into the batch under ``IDS_KEY``; the trainer removes them again before the forward pass, at the moment
  the micro-batch is trained, checks them against the composed batch it expects, and reports that batch's
  task ids (each once: a task's instances share its id). Ids are therefore recorded when the batch is used,
  not when the dataloader (which prefetches) builds it, and every rank records the whole composed batch.
- :class:`StepRecorder` is a callback: at each optimizer step's end it closes the step's ids, and from the
  per-step log (``logging_steps=1``) it takes the pre-clipping ``grad_norm``, the loss and the learning rate.
  Under DDP both are of the whole step: the norm is taken after the gradients' all-reduce, and the Trainer
  scales each rank's token-sum loss by the global supervised-token count (``average_tokens_across_devices``),
  so uneven slices weigh every token as one process would.

The id column and the batch key live here, beside the collator that uses them: :mod:`feedback._hf` imports
them and this trainer from here, never the other way round, so the two modules form no cycle. Importing this
module imports torch and TRL, so the rest of the package imports it inside functions (or for type checking) only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import PrinterCallback, TrainerCallback
from trl import SFTTrainer

from feedback.records import StepRecord

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel

    # What AutoModelForCausalLM.from_pretrained returns: a PreTrainedModel with GenerationMixin (a type only).
    from transformers.models.auto.modeling_auto import _BaseModelWithGenerate as CausalLM

    # The model a round trains, scores or answers with: a whole causal LM, or one under a LoRA adapter.
    Student = CausalLM | PeftModel

# The column that carries task ids through TRL's preparation and the collator; TRL keeps extra columns.
ID_COLUMN = "id"
# Key under which the collator hands a micro-batch's ids to the trainer, which removes it before the forward.
IDS_KEY = "feedback_ids"


# Id of the ghost row that a rank trains when its slice of a composed batch is empty.
GHOST_ID = -1


def rank_slice(rows: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of one composed batch's rows; the shares of all ranks are the batch, in order
    (sizes differ by at most one, the first ranks taking the extra rows, as ``numpy.array_split``)."""
    size, extra = divmod(len(rows), world)
    start = rank * size + min(rank, extra)
    return rows[start : start + size + (1 if rank < extra else 0)]


class ComposedBatches(Sampler[list[int]]):
    """Yields the given row-index lists as they are (one process), or this rank's slice of each (several): a batch
    sampler with a fixed plan. ``ghost`` is the row index trained by a rank whose slice is empty."""

    def __init__(self, plan: list[list[int]], rank: int = 0, world: int = 1, ghost: int | None = None) -> None:
        if world > 1 and ghost is None and any(len(batch) < world for batch in plan):
            raise ValueError("a composed batch has fewer rows than processes and no ghost row was given.")
        shares = [rank_slice(list(batch), rank, world) for batch in plan]
        self.plan = [share or [ghost] for share in shares] if ghost is not None else shares

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(batch) for batch in self.plan])

    def __len__(self) -> int:
        return len(self.plan)


class IdCollator:
    """Moves each row's id out of the way of TRL's collator and into the batch under ``IDS_KEY``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [int(row[ID_COLUMN]) for row in rows]
        batch = self.inner([{k: v for k, v in row.items() if k != ID_COLUMN} for row in rows])
        batch[IDS_KEY] = torch.tensor(ids, dtype=torch.long)
        return batch


class StepRecorder(TrainerCallback):
    """Collects one :class:`StepRecord` per optimizer step."""

    def __init__(self) -> None:
        self.pending: list[int] = []  # ids of micro-batches trained since the last optimizer step
        self.step_ids: dict[int, list[int]] = {}
        self.step_logs: dict[int, dict[str, float]] = {}

    def micro_batch(self, ids: list[int]) -> None:
        self.pending.extend(dict.fromkeys(ids))  # a task once per micro-batch, however many instances it has

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_ids[state.global_step] = self.pending
        self.pending = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        # The Trainer logs right after the step ends; only training logs carry grad_norm (the final summary
        # and evaluation logs do not).
        if logs and "grad_norm" in logs and "loss" in logs:
            self.step_logs[state.global_step] = dict(logs)

    def records(self) -> list[StepRecord]:
        if self.pending:
            raise RuntimeError(f"ids {self.pending} were trained after the last optimizer step: a step was lost.")
        missing = sorted(set(self.step_ids) ^ set(self.step_logs))
        if missing:
            raise RuntimeError(
                f"steps {missing} have ids but no log (or a log but no ids): keep logging_steps=1 and do not add "
                "callbacks that suppress logging."
            )
        out = []
        for step in sorted(self.step_ids):
            logs = self.step_logs[step]
            out.append(
                StepRecord(
                    step=step,
                    grad_norm=float(logs["grad_norm"]),
                    loss=float(logs["loss"]),
                    learning_rate=float(logs.get("learning_rate", math.nan)),
                    ids=self.step_ids[step],
                )
            )
        return out


class ComposedSFTTrainer(SFTTrainer):
    """SFTTrainer whose training dataloader follows ``self.composed_plan`` and reports ids to ``self.recorder``."""

    composed_plan: list[list[int]]  # row indices of each composed batch (all ranks together)
    composed_ids: list[list[int]]  # the task id of each of those rows
    ghost_row: int | None  # row index trained by a rank whose share of a composed batch is empty
    trained_micro_batches: int
    recorder: StepRecorder
    # Narrower than the Trainer's own annotations: make_trainer is given a Student and a datasets.Dataset.
    model: Student
    train_dataset: Dataset

    def get_train_dataloader(self) -> Any:
        if self.train_dataset is None:
            raise ValueError("ComposedSFTTrainer needs a train_dataset.")
        world = self.args.world_size
        sampler = ComposedBatches(self.composed_plan, self.args.process_index, world, self.ghost_row)
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=0,  # workers would not change the order, but they would copy the recorder
        )
        self.trained_micro_batches = 0
        if world > 1:
            # accelerate's prepare would deal whole batches to the ranks in turn; the sampler already gives each
            # rank its slice, and the Trainer moves every batch to the rank's device itself.
            return loader
        return self.accelerator.prepare(loader)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        got = [int(i) for i in inputs.pop(IDS_KEY).tolist() if int(i) != GHOST_ID]
        expected = self.composed_ids[self.trained_micro_batches]
        exact = self.args.world_size == 1 and self.ghost_row is None
        if (got != expected) if exact else not set(got) <= set(expected):
            raise RuntimeError(
                f"micro-batch {self.trained_micro_batches} holds ids {got}, expected some of {expected}."
            )
        self.trained_micro_batches += 1
        self.recorder.micro_batch(expected)
        return super().training_step(model, inputs, num_items_in_batch)


def make_trainer(**kwargs: Any) -> ComposedSFTTrainer:
    trainer = ComposedSFTTrainer(**kwargs)
    trainer.composed_plan = []
    trainer.composed_ids = []
    trainer.ghost_row = None
    trainer.recorder = StepRecorder()
    trainer.add_callback(trainer.recorder)
    trainer.remove_callback(PrinterCallback)  # per-step logs go to steps.jsonl, not stdout
    trainer.data_collator = IdCollator(trainer.data_collator)
    return trainer
