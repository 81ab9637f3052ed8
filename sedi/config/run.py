"""Run-level settings: the seed of every random choice, the round cap, and when to stop early.

Kept apart from :mod:`sedi.config.model` (which re-exports :class:`RunConfig`) so that each config module stays
small; like it, this imports nothing from the code it configures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sedi.config.teacher import _Strict


class StopWhenConfig(_Strict):
    """Stop a run when more data stops paying for itself on the held-out tasks (marginal value)."""

    rule: Literal["marginal_value"] = Field(
        "marginal_value",
        description="'marginal_value': after each held-out evaluation, compare the held-out loss now with the "
        "loss 'window' evaluations ago; stop when it fell by less than min_gain_per_100_calls (relative) per "
        "100 paid teacher calls, or when none of the last 'window' evaluations beat the best loss before it.",
    )
    window: int = Field(
        3, ge=1, description="K: how many evaluations back the gain is measured over (and the patience for no gain)."
    )
    min_gain_per_100_calls: float = Field(
        0.01,
        ge=0,
        description="Smallest worthwhile held-out loss decrease, as a fraction of the earlier loss, per 100 paid "
        "teacher calls (0.01 = 1% per 100 calls). 0 stops only when the loss stops improving.",
    )


class RunConfig(_Strict):
    """Run-level settings."""

    seed: int = Field(0, description="Seed of every random choice (in-context sampling, request seeds).")
    max_rounds: int = Field(
        2,
        ge=1,
        description="Most generate-filter-train-feedback rounds. The default is the embedded run's; `sedi init` "
        "writes more for a remote teacher, enough to reach the budget or the target first.",
    )
    stop_when: StopWhenConfig | None = Field(
        None,
        description="Stop early when the held-out gain per paid call falls below a threshold (needs "
        "student.heldout_size > 0); the run ends 'finished' and says why. Unset: run to target_kept, the "
        "round cap or the budget.",
    )
