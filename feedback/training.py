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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from feedback.records import RoundResult, TrainExample, write_steps_jsonl

STEPS_FILE = "steps.jsonl"


class TrainConfig(BaseModel):
    """How the student is fine-tuned in each round."""

    model_config = ConfigDict(extra="forbid")

    lora: bool = Field(True, description="Train a LoRA adapter (peft); False fine-tunes all weights.")
    # r=16, alpha=2r: the common LoRA starting point; enough capacity for a few thousand instruction examples.
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha/r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch's input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules that get LoRA: 'all-linear' (every linear layer except the output head, which TRL's "
        "loss cannot train through an adapter) or a list of module names.",
    )
    # 2e-4 is the usual LoRA rate; for full fine-tuning (lora=False) use about 1e-5 to 2e-5.
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW.")
    # Rounds are short and continue one adapter: a schedule that decays to zero inside every round would make
    # the last steps of each round learn almost nothing and their gradient norms incomparable, so constant.
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule within a round (transformers' lr_scheduler_type)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps at the start of every round.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    per_device_batch_size: int = Field(
        8,
        ge=1,
        description="The composed batch size: each composed batch is one micro-batch and may not hold more "
        "tasks than this (smaller ones, such as a last partial batch, are fine).",
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Composed batches per optimizer step; with 1 every composed batch is its own step, so the "
        "per-step gradient norm describes exactly one composed batch.",
    )
    max_length: int = Field(512, ge=2, description="Most tokens of one example (prompt, completion, template).")
    too_long: Literal["drop", "truncate"] = Field(
        "drop",
        description="An example longer than max_length is left out ('drop') or cut to max_length ('truncate', "
        "TRL's behaviour; it is still left out if no completion token survives). Left-out ids are reported in "
        "RoundResult.dropped_ids. 'drop' is the default so that every signal describes a whole example.",
    )
    max_grad_norm: float = Field(
        1.0, ge=0.0, description="Clip the total gradient norm to this (0: no clipping; the norm is logged anyway)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA when available, else CPU.")
    bf16: Literal["auto"] | bool = Field(
        "auto",
        description="bf16 autocast. 'auto': on CUDA when the GPU supports bf16; on CPU when it has native bf16 "
        "instructions (AVX512-BF16 or AMX), where it is faster than fp32.",
    )
    # Set explicitly: TRL's default has changed across releases (a chunked NLL since 1.7 that fails under LoRA).
    loss_type: Literal["nll", "dft"] = Field(
        "nll", description="TRL's SFT loss: 'nll' (cross-entropy) or 'dft' (probability-weighted)."
    )
    loss_on: Literal["completion", "assistant", "all"] = Field(
        "completion",
        description="Which tokens are supervised: the completion only, the assistant turn's {% generation %} "
        "tokens (chat templates with generation markers), or all tokens.",
    )
    chat: Literal["auto"] | bool = Field(
        "auto",
        description="Render examples with the tokenizer's chat template (user prompt, assistant completion); "
        "'auto' does so when the tokenizer has one, else the completion is appended to the prompt as text.",
    )
    seed: int = Field(0, description="Seed for LoRA init, dropout and the trainer.")
    eval_batch_size: int = Field(8, ge=1, description="Examples per forward pass when scoring per-example loss.")


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
    row_of = {int(row_id): index for index, row_id in enumerate(rows[_hf.ID_COLUMN])}
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
