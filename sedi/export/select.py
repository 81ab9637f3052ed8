"""``sedi export --select``: keep the kept tasks a training signal points at, and add the signal columns.

Selections (read :mod:`sedi.store.signals` for what each signal measured):

- ``all`` (the default): every kept task;
- ``attractive``: the tasks of attractive batches, the ones the feedback stage promoted into the seed pool;
- ``top-loss:N``: the N trained tasks the student found hardest: by their own per-example loss where it was
  measured (``feedback.promote: top_k``), else by the mean loss of the step that trained them. Tasks never
  trained have no loss and are not ranked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sedi.exceptions import ConfigError
from sedi.store.candidates import candidate_id_of
from sedi.store.signals import SIGNAL_COLUMNS, TaskSignals

SelectKind = Literal["all", "attractive", "top-loss"]
SELECTIONS = "all, attractive or top-loss:N (N a whole number above 0)"


@dataclass(frozen=True)
class Selection:
    kind: SelectKind = "all"
    n: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.n}" if self.n is not None else self.kind


EVERY_TASK = Selection()


def parse_selection(text: str) -> Selection:
    """``--select``'s value; an unknown signal is one line naming the choices (exit 2 before anything is read)."""
    kind, _, count = text.strip().partition(":")
    if kind in ("all", "attractive") and not count:
        return Selection(kind)  # type: ignore[arg-type]  # narrowed by the test above
    if kind == "top-loss" and count.isdigit() and int(count) > 0:
        return Selection("top-loss", int(count))
    raise ConfigError(f"--select {text!r}: use {SELECTIONS}")


def _loss(signals: TaskSignals) -> float | None:
    loss = signals.example_loss if signals.example_loss is not None else signals.step_loss
    return None if loss is None or math.isnan(loss) else loss


def select(
    records: list[dict[str, Any]], signals: dict[int, TaskSignals], selection: Selection
) -> list[dict[str, Any]]:
    """The records ``selection`` keeps, in their order, each with a ``signals`` dict (every signal column)."""
    tagged = []
    for record in records:
        cid = candidate_id_of(record["id"])
        mine = signals.get(cid, TaskSignals()) if cid is not None else TaskSignals()
        tagged.append(({**record, "signals": asdict(mine)}, mine))
    if selection.kind == "attractive":
        return [record for record, mine in tagged if mine.attractive]
    if selection.kind == "top-loss":
        ranked = sorted(
            (i for i, (_, mine) in enumerate(tagged) if _loss(mine) is not None),
            key=lambda i: -(_loss(tagged[i][1]) or 0.0),
        )
        chosen = set(ranked[: selection.n])
        return [record for i, (record, _) in enumerate(tagged) if i in chosen]
    return [record for record, _ in tagged]


__all__ = ["EVERY_TASK", "SELECTIONS", "SIGNAL_COLUMNS", "Selection", "parse_selection", "select"]
