"""The student's settings: which model is fine-tuned, how it trains, how it is measured on held-out tasks.

Kept apart from :mod:`sedi.config.model` (which uses :class:`StudentConfig`) so that each config module stays small;
like it, this imports nothing from the code it configures but the training settings' own model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from feedback import TrainConfig
from sedi.config.teacher import _Strict


class StudentTrainConfig(TrainConfig):
    """The feedback package's training settings without a key of their own for the seed: a run trains with
    ``run.seed`` (``student.train.seed`` used to be documented and then always overwritten)."""

    seed: int = Field(0, exclude=True, description="Not a config key: training follows run.seed.")

    @model_validator(mode="before")
    @classmethod
    def _no_seed_of_its_own(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            raise ValueError("student.train.seed does nothing: training follows run.seed; remove the key")
        return data


def _cpu_friendly_training() -> StudentTrainConfig:
    # Small batches and short examples: the embedded run trains a 270M student on 2 CPU cores.
    return StudentTrainConfig(per_device_batch_size=4, max_length=256)


class StudentConfig(_Strict):
    """The student fine-tuned every round on the new batches (LoRA by default)."""

    model: str = Field(
        "gemma-3-270m",
        description="'gemma-3-270m' (the bundled base model, converted once into the cache) or a directory "
        "holding a transformers causal LM and its tokenizer.",
    )
    train: StudentTrainConfig = Field(
        default_factory=_cpu_friendly_training,
        description="Training settings of each round (LoRA, learning rate, batch size, max length, device).",
    )
    heldout_size: int = Field(
        32,
        ge=0,
        description="Held-out tasks (the first N of seeds.heldout_path) whose mean loss is measured after "
        "every round, the same way for both methods. 0 disables the evaluation.",
    )
    # A loss can fall while the answers stay poor, so a few greedy answers are scored too. 16 tasks of 64 new
    # tokens cost about 20 s per round for the bundled 270M student on 2 CPU cores (batched, bf16).
    heldout_generate: int = Field(
        16,
        ge=0,
        description="Of those held-out tasks, the first N also get a greedy answer from the student after every "
        "round, scored by ROUGE-L F1 against the reference output (metric heldout_rouge_l). 0 disables it.",
    )
    heldout_max_new_tokens: int = Field(
        64, ge=1, description="Token limit of each greedy held-out answer (the reference is not truncated)."
    )
    # Held-out evaluation of the bundled 270M student costs about 55 s per round on 2 CPU cores (32 losses and
    # 16 greedy answers), as much as a round's generation: long experiments evaluate every few rounds.
    eval_every: int = Field(
        1,
        ge=1,
        description="Evaluate the student on the held-out tasks after every N-th round, after the last round and "
        "whenever the run ends (the same for every method).",
    )
    # Each process loads the student and imports torch (measured: about 20 s more per round for the tiny test
    # model on 2 CPU cores), so several processes pay only when each has its own device.
    processes: int = Field(
        1,
        ge=1,
        description="Processes the train stage runs in: 1 trains in the sedi process; N > 1 launches N processes "
        "(one per GPU, or gloo on CPU) under torchrun, or under accelerate with student.accelerate_config. Each "
        "step's global batch is still one composed batch, split across the processes.",
    )
    accelerate_config: str | None = Field(
        None,
        description="With student.processes > 1: an accelerate config file (accelerate launch --config_file), e.g. "
        "for FSDP or DeepSpeed. Unset: plain data parallelism under torchrun.",
    )

    @model_validator(mode="after")
    def _accelerate_config_needs_processes(self) -> StudentConfig:
        # Checked here, before any teacher call: the train stage runs only after a round's generation is paid for.
        if self.accelerate_config is None:
            return self
        if self.processes == 1:
            raise ValueError(
                "student.accelerate_config is set but student.processes is 1: set student.processes to the number "
                "of processes (one per GPU) or remove student.accelerate_config"
            )
        if not Path(self.accelerate_config).is_file():
            raise ValueError(
                f"student.accelerate_config: no file {self.accelerate_config}: give the path of an accelerate "
                "config (written by `accelerate config`) or remove the key"
            )
        return self
