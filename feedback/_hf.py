"""Glue to transformers, peft and TRL shared by training and per-example signals.

Every heavy import happens inside a function (or only for type checking), so ``import feedback`` stays
cheap. Training and the per-example loss both tokenise through :func:`prepare_rows`, which runs TRL's own
dataset preparation (an ``SFTTrainer`` is built for it), so a signal always describes exactly the tokens the
trainer saw. The settings come from :mod:`feedback.config` and the trainer from :mod:`feedback._trainer`;
neither imports this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from feedback.config import TrainConfig
from feedback.records import TrainExample

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase
    from trl import SFTConfig

    from feedback._trainer import ComposedSFTTrainer, Student

# transformers 5.23 warns on every round that TRL still calls a renamed property; nothing for a user to fix.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class Runtime:
    """Where and how a round runs, resolved from the config and the machine."""

    device: str  # "cpu" or "cuda"
    bf16: bool

    def describe(self) -> str:
        return f"{self.device} (bf16)" if self.bf16 else self.device


def resolve_runtime(config: TrainConfig) -> Runtime:
    """Pick the device and whether bf16 autocast runs, failing early with the fix when a request cannot be met."""
    import torch

    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise RuntimeError("TrainConfig.device='cuda' but torch sees no CUDA device: set device='auto' or 'cpu'.")
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu"
    if config.precision != "auto":
        return Runtime(device=device, bf16=config.precision == "bfloat16")
    if device == "cuda":
        return Runtime(device=device, bf16=torch.cuda.is_bf16_supported())
    # On CPU, bf16 autocast is only faster with native bf16 instructions (AVX512-BF16 or AMX); elsewhere it is
    # emulated and slower than fp32, so auto stays in fp32 there.
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return Runtime(device=device, bf16=bool(native))


def load_tokenizer(student: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student)
    if tokenizer.pad_token is None:  # padding is needed for batches; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def uses_chat(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> bool:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if config.chat == "auto":
        return has_template
    if config.chat and not has_template:
        raise ValueError(
            "TrainConfig.chat=True but the student's tokenizer has no chat template: set chat='auto' or False "
            "(plain prompt+completion text), or use a tokenizer with a chat template."
        )
    return bool(config.chat)


def load_student(
    student: str, config: TrainConfig, runtime: Runtime, adapter_dir: Path | None, *, trainable: bool
) -> Student:
    """The model to train or score: base + new LoRA, base + saved LoRA, or a (saved) full model."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    # A frozen base under LoRA can sit in bf16 on GPU (half the memory); weights that are trained stay fp32
    # and bf16 only enters through autocast, which keeps small updates from rounding away.
    frozen_bf16 = config.lora and runtime.bf16 and runtime.device == "cuda"
    dtype = torch.bfloat16 if frozen_bf16 else torch.float32
    set_seed(config.seed)  # LoRA's random init and dropout follow the config's seed
    if not config.lora:
        source = str(adapter_dir) if adapter_dir is not None else student
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    from peft import LoraConfig, PeftModel, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(student, dtype=dtype)
    if adapter_dir is not None:
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{adapter_dir} holds no adapter_config.json: pass the adapter_path of an earlier LoRA round, "
                "or adapter_dir=None to start a new adapter."
            )
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return cast("PeftModel", get_peft_model(base, lora))  # a PeftMixedModel only with mixed=True


def load_frozen(student: str, config: TrainConfig, runtime: Runtime, adapter_path: str | Path | None) -> Student:
    """The model to score or answer with: the student with a saved round's adapter (or saved full model), or the
    bare student when ``adapter_path`` is None, whatever ``config.lora`` says (there is no adapter to load)."""
    import torch
    from transformers import AutoModelForCausalLM

    if adapter_path is not None:
        return load_student(student, config, runtime, Path(adapter_path), trainable=False)
    return AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)


def to_inference(model: Student, runtime: Runtime) -> torch.device:
    """Put a model to score or answer with in eval mode on the runtime's device; return that device."""
    import torch

    device = torch.device(runtime.device)
    model.eval()
    # transformers wraps PreTrainedModel.to in functools.wraps, which typeshed types as an unbound function.
    model.to(device)  # type: ignore[arg-type]
    return device


# A student without a chat template sees the task in a fixed plain-text frame. Joining prompt and completion
# bare ("...sentence.Here is") would glue them together and let tokens merge across the boundary, so the
# frame ends on a newline after a label: the completion always starts on a token boundary.
PLAIN_PROMPT = "Instruction:\n{prompt}\n\nResponse:\n"


def raw_dataset(examples: list[TrainExample], chat: bool) -> Dataset:
    """Prompt/completion rows in TRL's format, conversational when the student has a chat template."""
    from datasets import Dataset

    from feedback._trainer import ID_COLUMN

    if chat:
        rows = [
            {
                ID_COLUMN: ex.id,
                "prompt": [{"role": "user", "content": ex.prompt}],
                "completion": [{"role": "assistant", "content": ex.completion}],
            }
            for ex in examples
        ]
    else:
        rows = [
            {ID_COLUMN: ex.id, "prompt": PLAIN_PROMPT.format(prompt=ex.prompt), "completion": ex.completion}
            for ex in examples
        ]
    return Dataset.from_list(rows)


def sft_args(config: TrainConfig, runtime: Runtime, output_dir: Path) -> SFTConfig:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=1,  # one pass over the composed batches per round
        logging_strategy="steps",
        logging_steps=1,  # a log per optimizer step is how grad_norm, loss and lr reach the recorder
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        use_cpu=runtime.device == "cpu",
        bf16=runtime.bf16,
        activation_checkpointing=False,  # TRL turns it on by default; on small CPU runs it only costs time
        # Length is enforced by prepare_rows (drop or truncate, reported by id), not inside TRL.
        max_length=None,
        packing=False,
        padding_free=False,
        shuffle_dataset=False,
        remove_unused_columns=False,  # keep the id column up to the collator
        completion_only_loss=config.loss_on in ("completion", "assistant"),
        assistant_only_loss=config.loss_on == "assistant",
        loss_type=config.loss_type,
        dataloader_num_workers=0,
        dataloader_drop_last=False,
        # Under several processes (feedback._launch): every trainable weight is used in every forward, so DDP's
        # search for unused ones is only an extra graph traversal per step.
        ddp_find_unused_parameters=False,
    )


def build_trainer(
    model: Student, tokenizer: PreTrainedTokenizerBase, args: SFTConfig, dataset: Dataset
) -> ComposedSFTTrainer:
    from feedback._trainer import make_trainer

    return make_trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def prepare_rows(trainer: ComposedSFTTrainer, config: TrainConfig) -> tuple[Dataset, list[int]]:
    """Apply the length policy to TRL's tokenised rows; return (rows with id/input_ids/labels, dropped ids).

    ``"drop"`` removes every row longer than max_length; ``"truncate"`` cuts it to max_length like TRL does.
    Either way a row left without a supervised label is removed, and every removed id is reported.
    """
    from feedback._trainer import ID_COLUMN

    prepared = trainer.train_dataset.select_columns([ID_COLUMN, "input_ids", "labels"])
    limit = config.max_length
    dropped: list[int] = []
    keep: list[int] = []
    cut: dict[int, int] = {}
    for index, row in enumerate(prepared):
        ids, labels = row["input_ids"], row["labels"]
        if len(ids) > limit:
            if config.too_long == "drop":
                dropped.append(row[ID_COLUMN])
                continue
            labels = labels[:limit]
            cut[index] = limit
        # Labels are shifted by one in the loss, so the first position never counts as a target.
        if not any(label != -100 for label in labels[1:]):
            dropped.append(row[ID_COLUMN])
            continue
        keep.append(index)
    rows = prepared.select(keep)
    if cut:
        kept_cut = {position: cut[index] for position, index in enumerate(keep) if index in cut}

        def _truncate(row: dict[str, Any], position: int) -> dict[str, Any]:
            end = kept_cut.get(position)
            if end is None:
                return row
            return {**row, "input_ids": row["input_ids"][:end], "labels": row["labels"][:end]}

        rows = rows.map(_truncate, with_indices=True)
    return rows, dropped


def with_ghost_row(rows: Dataset) -> tuple[Dataset, int]:
    """``rows`` plus a copy of its shortest row with no supervised token, and that row's index: what a rank trains
    when its share of a composed batch is empty (zero loss and gradient, but a forward and backward like the rest)."""
    from feedback._trainer import GHOST_ID, ID_COLUMN

    shortest = min(range(len(rows)), key=lambda index: len(rows[index]["input_ids"]))
    ids = rows[shortest]["input_ids"]
    ghost = {ID_COLUMN: GHOST_ID, "input_ids": ids, "labels": [-100] * len(ids)}
    return rows.add_item(ghost), len(rows)
