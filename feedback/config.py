"""The feedback package's settings: how a round trains, how signals re-select seeds, how prompts steer.

Only pydantic models and literal types live here, so that callers, the pure selection code and the heavy
training glue can all read a config without importing one another (as TRL keeps ``SFTConfig`` apart from its
trainer): every module of the package may import this one, and it imports none of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Selector = Literal["grad_norm", "loss", "loss_drop"]
DemoteRule = Literal["offspring_signal", "none"]


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
    # One vocabulary with the teacher's and the encoder's precision (auto | float32 | bfloat16).
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Training arithmetic: 'bfloat16' autocast or 'float32'. 'auto': bf16 on CUDA when the GPU "
        "supports it and on CPUs with native bf16 instructions (AVX512-BF16 or AMX), where it is faster, else float32.",
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


class BanditConfig(BaseModel):
    """The prompt bandit: prior, exploration floor and topic floor."""

    model_config = ConfigDict(extra="forbid")

    prior: float = Field(
        2.0,
        gt=0,
        description="Weight of the prior in pseudo-offspring: Beta(prior * m, prior * (1 - m)) before any evidence, "
        "m the pool's pooled keep rate so far (0.5 before any).",
    )
    explore: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of each prompt's in-context slots drawn uniformly from the pool (the exploration floor).",
    )
    one_per_topic: bool = Field(
        True, description="Show at most one seed per seed topic in a prompt while the pool allows (topic floor)."
    )


class FeedbackConfig(BaseModel):
    """How training signals feed back into the seed pool and the prompts."""

    model_config = ConfigDict(extra="forbid")

    # SeDi-Instruct picks the highest-gradient-norm batch among every 10 optimizer steps.
    interval: int = Field(
        10,
        ge=1,
        description="Optimizer steps per selection window, counted over the whole run (windows do not restart at "
        "round boundaries; a partial window carries into the next round and is settled when the run ends).",
    )
    selector: Selector = Field(
        "grad_norm",
        description="Step signal that makes a batch attractive: pre-clipping gradient norm (the paper's), "
        "training loss, or loss drop to the next step (see feedback.signals.loss_drop).",
    )
    promote: Literal["all", "top_k"] = Field(
        "all",
        description="Promote every machine-generated task of an attractive batch ('all', the paper's rule), or "
        "only the top_k of each batch by per-example loss ('top_k', needs per-example losses).",
    )
    top_k: int = Field(2, ge=1, description="Tasks promoted per attractive batch when promote='top_k'.")
    demote: DemoteRule = Field(
        "offspring_signal",
        description="Which seeds leave at every feedback cycle (each decided window). 'offspring_signal': the "
        "weakest seeds by the training signal of their offspring (mean over the candidates their prompts produced "
        "of the step gradient norm that trained each, relative to the run's mean step norm; a rejected candidate "
        "counts 0), if below the pool's mean; 'none': only the max_pool_size cap removes seeds.",
    )
    demote_per_cycle: int = Field(1, ge=0, description="Most seeds demoted per feedback cycle by the demote rule.")
    # One prompt yields about 5 candidates on the bundled teacher: 8 offspring are about two prompts' worth.
    min_evidence: int = Field(
        8, ge=1, description="Offspring a seed must have (candidates of prompts that showed it) before it can leave."
    )
    # 175 human seeds (Self-Instruct) plus room for about as many promoted ones; a larger pool dilutes the
    # human seeds that every generation prompt samples from.
    max_pool_size: int = Field(350, ge=1, description="Most seeds in the pool; beyond it the weakest are demoted.")
    protect_human: bool = Field(True, description="Never demote human-written seeds (machine seeds always go first).")
    # Measured on the bundled teacher: 'pool' (the method as stated) needed 1.29x the Self-Instruct baseline's calls
    # per kept task over 3 seeds x 150 calls (interval 1.14-1.45): a uniform 8 of 175 human + ~20 promoted seeds
    # shows almost only human seeds, whose long outputs the teacher imitates until max_tokens cuts it. 'split'
    # needed 0.90x (0.74-1.07; 3 seeds x 64 calls, scripts/bench_in_context.py; docs/results.md, "What the SeDi
    # prompts show").
    in_context: Literal["pool", "split"] = Field(
        "split",
        description="How a prompt's in-context tasks are drawn: 'split' as Self-Instruct (generation.human_in_context "
        "human seeds and generation.machine_in_context promoted ones; measured fewer calls per kept task), 'pool' "
        "a uniform subset of the whole active seed pool (human and promoted, as the method states). "
        "feedback.steer draws from the pool.",
    )
    steer: bool = Field(
        False,
        description="Beyond the paper: draw in-context tasks by a bandit over what each seed's prompts yielded "
        "(kept against rejected offspring) instead of uniformly (feedback.bandit). Draws from the whole pool: "
        "needs in_context 'pool' (set both).",
    )
    bandit: BanditConfig = Field(default_factory=BanditConfig, description="The prompt bandit (feedback.steer).")

    @model_validator(mode="after")
    def _steer_needs_the_pool(self) -> FeedbackConfig:
        # Refused, not switched: a validator that quietly changed in_context made one key change another's
        # meaning, and a recorded config read differently from what was written.
        if self.steer and self.in_context != "pool":
            raise ValueError("feedback.steer draws from the whole pool: set feedback.in_context to 'pool' as well")
        return self
