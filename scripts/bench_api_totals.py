"""The API-efficiency benchmark's JSON line from recorded per-seed totals, for results whose run directories are
gone (or per-seed tables from elsewhere): the same fields as ``bench_api_efficiency.py`` for the arms
``self-instruct``, ``sedi-paper`` and ``sedi``, with intervals from :func:`sedi.report.stats.totals_bootstrap_ratio_ci`
(seeds resampled, kept counts redrawn as Poisson) instead of the rounds-level bootstrap, which needs every round.

    python scripts/bench_api_totals.py [scripts/results/bench_api_150.json]

The file holds, per seed and arm: ``calls``, ``answered`` (calls that got a response), ``kept``, ``diversity``
(mean cosine distance), ``vendi``, ``topics``, ``heldout_loss``, ``promotions``, ``demotions``.

Recorded files predate the arms table (``sedi.experiment.arms``): their arm ``sedi`` is today's ``sedi-steer`` (steered
prompts, from the whole pool), so here ``calls_per_kept_ratio`` stays what it was when recorded, sedi-steer over
self-instruct (in ``sedi compare`` and ``bench_api_efficiency.py`` it is now ``default`` over ``self-instruct``).
The keys are kept as recorded so that the JSON lines in docs/results.md reproduce.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from sedi.experiment.arms import ARMS as TABLE
from sedi.report import stats

ARMS = {"self_instruct": "self-instruct", "sedi_paper": "sedi-paper", "sedi": "sedi"}
RECORDED_AS = {"self-instruct": "self-instruct", "sedi-paper": "sedi-paper", "sedi": "sedi-steer"}  # arm today
assert set(RECORDED_AS.values()) <= set(TABLE)
PAIRS = {"": ("self-instruct", "sedi"), "_paper": ("self-instruct", "sedi-paper"), "_steer": ("sedi-paper", "sedi")}
MEANS = {"kept": "kept", "diversity": "diversity", "vendi": "vendi", "topics_covered": "topics"}
MEANS |= {"heldout_loss": "heldout_loss", "promotions": "promotions", "demotions": "demotions"}
DEFAULT = Path(__file__).resolve().parent / "results" / "bench_api_150.json"


def pooled(runs: list[dict[str, Any]], calls: str = "calls") -> float:
    return sum(r[calls] for r in runs) / sum(r["kept"] for r in runs)


def summarise(recorded: dict[str, Any]) -> dict[str, Any]:
    seeds = sorted(recorded["seeds"], key=int)
    runs = {arm: [recorded["seeds"][s]["arms"][arm] for s in seeds] for arm in ARMS.values()}
    result: dict[str, Any] = {}
    for suffix, (base, arm) in PAIRS.items():
        a, b = runs[base], runs[arm]
        totals_a, totals_b = [(r["calls"], r["kept"]) for r in a], [(r["calls"], r["kept"]) for r in b]
        result[f"calls_per_kept_ratio{suffix}"] = round(pooled(b) / pooled(a), 4)
        interval = stats.totals_bootstrap_ratio_ci(totals_a, totals_b)
        result[f"calls_per_kept_ratio{suffix}_ci95"] = [round(x, 4) for x in interval] if interval else None
        per_seed = [stats.ratio(*x, *y) for x, y in zip(totals_a, totals_b, strict=True)]
        result[f"calls_per_kept_ratio{suffix}_per_seed"] = [None if r is None else round(r, 4) for r in per_seed]
        result[f"answered_per_kept_ratio{suffix}"] = round(pooled(b, "answered") / pooled(a, "answered"), 4)
    for name, arm in ARMS.items():
        result[f"calls_per_kept_{name}"] = round(pooled(runs[arm]), 4)
        result[f"answered_per_kept_{name}"] = round(pooled(runs[arm], "answered"), 4)
        for short, key in MEANS.items():
            values = [float(r[key]) for r in runs[arm] if r.get(key) is not None]  # a run may lack an evaluation
            result[f"{short}_{name}"] = round(statistics.fmean(values), 4) if values else None
            result[f"{short}_{name}_stdev"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        result[f"per_seed_{name}"] = runs[arm]
    result["seeds"] = [int(s) for s in seeds]
    result["interval"] = "paired bootstrap over seeds, kept counts redrawn as Poisson (sedi.report.stats)"
    return result


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    print(json.dumps(summarise(json.loads(path.read_text()))))


if __name__ == "__main__":
    main()
