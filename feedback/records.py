"""Plain records that cross the boundary of the feedback package: what goes into a round and what comes out.

Everything here is ids, strings and numbers so that callers (the generation loop, reports, tests) never need
torch or transformers to read a round's result. :class:`FrozenRecord` is also the base of the pool's and the
selection's decisions, so that every record the package hands out is immutable and rejects unknown fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FrozenRecord(BaseModel):
    """Base of every plain record: immutable, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainExample(FrozenRecord):
    """One training row, as a prompt and its target completion: a task, or one of its instances (examples
    sharing an id are the instances of one task, and train in the same step).

    The same record serves chat and base students: with a chat template (``TrainConfig.chat``) the prompt
    becomes one user message and the completion one assistant message; without one the completion is
    appended to the prompt as plain text (end the prompt with a separator such as a newline, otherwise the
    tokens at the seam may merge and the prompt/completion boundary shifts).
    """

    id: int = Field(description="The task's id: every per-step and per-example signal is keyed by it, not by position.")
    prompt: str = Field(description="What the student sees: the instruction, followed by the input when there is one.")
    completion: str = Field(description="What the student learns to write: the task's output.")


class StepRecord(FrozenRecord):
    """What one optimizer step saw and did."""

    step: int = Field(description="Optimizer step within the round, counted from 1 like the Trainer's global_step.")
    grad_norm: float = Field(
        description="Total L2 norm of all trainable gradients of this step, before clipping to max_grad_norm."
    )
    loss: float = Field(
        description="Training loss of the step: token-weighted mean over all supervised tokens of its micro-batches."
    )
    learning_rate: float = Field(description="Learning rate used by this step's parameter update.")
    ids: list[int] = Field(
        description="Ids of the tasks in this step's micro-batches, in the order they were trained "
        "(several composed batches when gradient_accumulation_steps > 1)."
    )


class RoundResult(FrozenRecord):
    """The outcome of one training round."""

    steps: list[StepRecord] = Field(description="One record per optimizer step, in order.")
    dropped_ids: list[int] = Field(
        description="Ids none of whose examples were trained on: each too long for max_length, or left without a "
        "supervised token."
    )
    adapter_path: str = Field(
        description="Directory holding the saved LoRA adapter (or the full model when lora=False) and tokenizer."
    )
    train_loss: float = Field(description="Mean of the steps' losses (nan when no step ran).")
    seconds: float = Field(description="Wall-clock seconds of the round, loading and saving included.")
    device: str = Field(description="Device the round trained on, 'cpu' or 'cuda', with ' (bf16)' when bf16 ran.")


def write_steps_jsonl(steps: list[StepRecord], path: Path) -> None:
    """Write one JSON object per step; the file is the round's durable per-step log."""
    with path.open("w", encoding="utf-8") as handle:
        for record in steps:
            handle.write(json.dumps(record.model_dump()) + "\n")


def read_steps_jsonl(path: Path) -> list[StepRecord]:
    """Read records written by :func:`write_steps_jsonl`."""
    with path.open(encoding="utf-8") as handle:
        return [StepRecord.model_validate_json(line) for line in handle if line.strip()]
