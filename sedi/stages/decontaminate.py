"""Decontamination: candidates and seeds that copy an evaluation item (held-out tasks, ``filter.decontaminate``).

The checker itself (:class:`diversity.Decontaminator`: the same normalised prompt, a shared word 13-gram, or
ROUGE-L of the prompts above 0.85) works on plain tasks; this stage chooses the evaluation files from the config,
turns a bad file into a one-line config error before any request, and refuses seeds that copy an item: a seed
is shown in every prompt, so its copies would be everywhere. A candidate that copies an item is rejected with rule
``contaminated`` by :class:`sedi.stages.filtering.TaskFilter`, the matched item named in its detail.

Cost (``python scripts/bench_decontaminate.py``, 2-core x86, shared machine): 0.3-0.5 ms per candidate against
10,000 evaluation rows with all three measures, after a one-off index build of about 2 s; the bundled 252
held-out tasks build in about 0.05 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diversity.decontaminate import ContaminationMatch, Decontaminator, EvalFileError, EvalItem, load_eval_items
from sedi.config.model import SediConfig
from sedi.config.seeds import BUNDLED_HELDOUT, BUNDLED_SEEDS, Task, bundled_path
from sedi.exceptions import ConfigError

CONTAMINATED = "contaminated"


def _heldout_file(config: SediConfig) -> Path:
    return Path(config.seeds.heldout_path) if config.seeds.heldout_path else bundled_path(BUNDLED_HELDOUT)


def eval_items(config: SediConfig) -> list[EvalItem]:
    """The evaluation items the run decontaminates against; a bad file is a one-line :class:`ConfigError`."""
    sources = [("seeds.heldout_path", _heldout_file(config))] if config.filter.decontaminate_heldout else []
    sources += [("filter.decontaminate", Path(path)) for path in config.filter.decontaminate]
    items = []
    for field, path in sources:
        try:
            items += load_eval_items(path)
        except EvalFileError as err:
            raise ConfigError(f"{field}: {err}") from None
    return items


def decontaminator(config: SediConfig, items: Sequence[EvalItem] | None = None) -> Decontaminator | None:
    """The run's checker, or None when nothing is to be checked."""
    items = eval_items(config) if items is None else items
    return Decontaminator(items, n=config.filter.decontaminate_ngram) if items else None


def check_seed_copies(config: SediConfig, seeds: Sequence[Task], checker: Decontaminator | None) -> None:
    """Refuse seeds that copy an evaluation item, naming both files and rows, before anything is paid."""
    if checker is None:
        return
    hits = checker.check_seeds(seeds)
    if not hits:
        return
    first = hits[0]
    seed_file = config.seeds.path or str(bundled_path(BUNDLED_SEEDS))
    more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
    raise ConfigError(
        f"{seed_file}: seed {first.seed_index + 1} ({seeds[first.seed_index].id}) copies the evaluation item "
        f"{first.match.item_id} ({first.match.measure}){more}: remove it from one of the two files, or set "
        "filter.decontaminate_heldout: false if the held-out set is meant to overlap the seeds"
    )


def match_detail(match: ContaminationMatch) -> dict[str, object]:
    """What a ``contaminated`` verdict records: the item, the measure and its score."""
    return {"matched": match.item_id, "measure": match.measure, "score": round(float(match.score), 6)}
