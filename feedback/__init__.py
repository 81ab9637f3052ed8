"""Training rounds, per-step signals and seed re-selection on plain types.

Never imports ``sedi`` or ``diversity``. Importing the package is light: torch, transformers, TRL, peft and
datasets are imported inside the functions that need them (``train_round``, ``per_example_loss``).
"""

from feedback.answers import greedy_answers
from feedback.records import RoundResult, StepRecord, TrainExample, read_steps_jsonl, write_steps_jsonl
from feedback.selection import (
    Attractive,
    Demotion,
    FeedbackConfig,
    PoolEntry,
    Promotion,
    demotions,
    promotions,
    select_attractive,
)
from feedback.signals import loss_drop, per_example_loss
from feedback.training import STEPS_FILE, TrainConfig, train_round

__all__ = [
    "STEPS_FILE",
    "Attractive",
    "Demotion",
    "FeedbackConfig",
    "PoolEntry",
    "Promotion",
    "RoundResult",
    "StepRecord",
    "TrainConfig",
    "TrainExample",
    "demotions",
    "greedy_answers",
    "loss_drop",
    "per_example_loss",
    "promotions",
    "read_steps_jsonl",
    "select_attractive",
    "train_round",
    "write_steps_jsonl",
]
