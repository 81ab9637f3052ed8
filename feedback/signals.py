"""Per-step signals besides the gradient norm. Pure Python.

Kept apart from the per-example loss (:mod:`feedback.scoring`, which needs a model) so that
:mod:`feedback.selection` can rank steps by any signal without importing torch or the training glue.
"""

from __future__ import annotations

import itertools
import math

from feedback.records import StepRecord


def loss_drop(steps: list[StepRecord]) -> dict[int, float]:
    """For each step but the last: its training loss minus the next step's, keyed by the step.

    Definition: ``loss_drop[s] = loss(s) - loss(s')`` where ``s'`` is the next recorded step. ``loss(s)`` is
    measured on step ``s``'s batch *before* its update and ``loss(s')`` on the next batch before the next update,
    so the value is how much lower the training loss was right after step ``s``'s update; positive means it
    fell. It compares different batches and is therefore noisy; it is a cheap signal, not a controlled
    measurement. The last step has no successor and gets no value; non-finite losses give no value either.
    """
    ordered = sorted(steps, key=lambda record: record.step)
    drops: dict[int, float] = {}
    for current, following in itertools.pairwise(ordered):
        value = current.loss - following.loss
        if math.isfinite(value):
            drops[current.step] = value
    return drops
