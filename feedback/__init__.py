"""Training rounds, per-step signals and seed re-selection on plain types.

Never imports ``sedi`` or ``diversity``. Importing the package is light: torch, transformers, TRL, peft and
datasets are imported inside the functions that need them (``train_round``, ``per_example_loss``).
"""

from feedback.answers import greedy_answers
from feedback.bandit import Arm, BanditConfig, draw_thompson, draw_uniform, posterior_mean, top_share
from feedback.pool import Demotion, PoolEntry, demotions, weak_seeds
from feedback.records import RoundResult, StepRecord, TrainExample, read_steps_jsonl, write_steps_jsonl
from feedback.selection import Attractive, FeedbackConfig, Promotion, decided_through, promotions, select_attractive
from feedback.signals import loss_drop, per_example_loss
from feedback.training import STEPS_FILE, TrainConfig, train_round

__all__ = [
    "STEPS_FILE",
    "Arm",
    "Attractive",
    "BanditConfig",
    "Demotion",
    "FeedbackConfig",
    "PoolEntry",
    "Promotion",
    "RoundResult",
    "StepRecord",
    "TrainConfig",
    "TrainExample",
    "decided_through",
    "demotions",
    "draw_thompson",
    "draw_uniform",
    "greedy_answers",
    "loss_drop",
    "per_example_loss",
    "posterior_mean",
    "promotions",
    "read_steps_jsonl",
    "select_attractive",
    "top_share",
    "train_round",
    "weak_seeds",
    "write_steps_jsonl",
]
