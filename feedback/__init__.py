"""Training rounds, per-step signals and seed re-selection on plain types.

Never imports ``sedi`` or ``diversity``. Importing the package, or any of its pure modules (``config``,
``records``, ``bandit``, ``pool``, ``signals``, ``selection``), is light: the entry points that touch a model
(``train_round``, ``launch_round``, ``per_example_loss``, ``greedy_answers``) are loaded on first use, and they
import torch, transformers, TRL, peft and datasets only when called.
"""

import importlib
from typing import TYPE_CHECKING

from feedback.bandit import Arm, draw_thompson, draw_uniform, posterior_mean, top_share
from feedback.config import BanditConfig, FeedbackConfig, TrainConfig
from feedback.pool import Demotion, PoolEntry, demotions, weak_seeds
from feedback.records import RoundResult, StepRecord, TrainExample, read_steps_jsonl, write_steps_jsonl
from feedback.selection import Attractive, Promotion, decided_through, promotions, select_attractive
from feedback.signals import loss_drop

if TYPE_CHECKING:
    from feedback._launch import launch_round
    from feedback.answers import greedy_answers
    from feedback.scoring import per_example_loss
    from feedback.training import STEPS_FILE, train_round

# Loaded on first access (PEP 562), so that importing ``feedback.selection`` never loads the training glue:
# name -> the module that defines it.
_LAZY = {
    "STEPS_FILE": "feedback.training",
    "train_round": "feedback.training",
    "launch_round": "feedback._launch",
    "per_example_loss": "feedback.scoring",
    "greedy_answers": "feedback.answers",
}

if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any name imported from the package

    def __getattr__(name: str) -> object:
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "launch_round",
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
