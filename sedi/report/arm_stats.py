"""Per-run numbers a comparison of arms reports beyond ``sedi status``'s, read from each run's database read-only,
and the words a calls-per-kept ratio is given in (``comparison.md`` and ``sedi report`` say it the same way).

Generation requests are the ``requests`` rows of kind ``tasks`` that got a response (a request planned when the
budget ran out was never paid for, so it counts in neither the numerator nor the denominator).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sedi.report import stats
from sedi.report.summary import read_summary
from sedi.store.db import RunStore
from sedi.store.report_queries import arm_counts
from sedi.store.rundir import connect_readonly


def ratio_words(pair: dict[str, Any]) -> str:
    """'0.421 (95% interval 0.300 to 0.590): fewer calls', from a ``sedi.experiment.comparison.pair_ratios`` result."""
    if pair.get("ratio") is None:
        return "not comparable (an arm kept no task)"
    ci = pair.get("ci95")
    interval = f"95% interval {ci[0]:.3f} to {ci[1]:.3f}" if ci else "no interval"
    return f"{pair['ratio']:.3f} ({interval}): {pair['verdict']} calls"


def run_counts(run_dir: Path) -> dict[str, Any]:
    """One run's counts: generation requests answered and how many of them stopped at max_tokens, the candidates
    and kept tasks they produced, every candidate, rejections by rule, the recorded config digest and the
    ``repair_calls`` of its status (null when the run's version does not count them)."""
    db = connect_readonly(run_dir / RunStore.DB_NAME)
    try:
        counts = arm_counts(db)
    except sqlite3.OperationalError as exc:  # a run directory from before a table existed
        raise ValueError(f"{run_dir}: cannot read its database ({exc})") from None
    finally:
        db.close()
    return {
        "generation_requests": counts.requests,
        "truncated_requests": counts.truncated,
        "request_candidates": counts.request_candidates,
        "request_kept": counts.request_kept,
        "candidates": counts.candidates,
        "rejected_by_rule": counts.rejected_by_rule,
        "config_digest": counts.config_digest,
        "repair_calls": read_summary(run_dir).get("repair_calls"),
    }


def pooled(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An arm's numbers over its seeds' :func:`run_counts`: sums first, then the shares (so each seed weighs by
    its size, as calls per kept task is pooled)."""
    requests = sum(c["generation_requests"] for c in counts)
    candidates = sum(c["candidates"] for c in counts)
    rules: dict[str, int] = {}
    for c in counts:
        for rule, n in c["rejected_by_rule"].items():
            rules[rule] = rules.get(rule, 0) + n
    repairs = [c["repair_calls"] for c in counts]

    def share(n: float, d: float) -> float | None:
        return round(n / d, 4) if d else None

    return {
        "candidates_per_request": share(sum(c["request_candidates"] for c in counts), requests),
        "kept_per_request": share(sum(c["request_kept"] for c in counts), requests),
        "truncated_request_share": share(sum(c["truncated_requests"] for c in counts), requests),
        "rejection_shares": {rule: round(n / candidates, 4) for rule, n in sorted(rules.items())} if candidates else {},
        "repair_calls": None if any(r is None for r in repairs) else sum(repairs),
    }


# Spend per kept task: each is a fixed spend over a count of kept tasks, so the Poisson interval of
# sedi.report.stats applies to the ratio of two runs (the rows ``sedi report`` marks only when it excludes 1).
SPEND = {"calls_per_kept": ("calls",), "tokens_per_kept": ("prompt_tokens", "completion_tokens")}
SPEND |= {"usd_per_kept": ("cost_usd",)}


def clearly_better(key: str, summaries: Sequence[dict[str, Any]]) -> set[int]:
    """Which runs need clearly less of ``key``'s spend per kept task (``read_summary`` dicts, the first the
    baseline): a later run where the 95% interval of its ratio to the baseline lies below 1, the baseline where
    every other run's lies above 1. Nothing where a run lacks the numbers (no kept task, unknown prices)."""
    if len(summaries) < 2:
        return set()

    def spend(summary: dict[str, Any]) -> float | None:
        if key == "usd_per_kept" and not summary.get("cost_known", True):
            return None
        values = [summary.get(k) for k in SPEND[key]]
        return None if any(v is None for v in values) else sum(float(v) for v in values if v is not None)

    base = summaries[0]
    verdicts = []
    for other in summaries[1:]:
        a, b = spend(base), spend(other)
        if a is None or b is None:
            return set()
        point = stats.ratio(a, base["kept"], b, other["kept"])
        verdicts.append(stats.verdict(point, stats.poisson_ratio_ci(a, base["kept"], b, other["kept"])))
    better = {i + 1 for i, words in enumerate(verdicts) if words == "fewer"}
    return better | ({0} if all(words == "more" for words in verdicts) else set())


def comparison_sentences(table: dict[str, Any]) -> list[str]:
    """A comparison's ratios in the words of ``comparison.md`` ('Calls per kept task, A over B: ...'), then each
    arm's config digest as the table gives it."""
    lines = [f"Calls per kept task, {name}: {ratio_words(pair)}." for name, pair in table.get("ratios", {}).items()]
    digests = {arm: row.get("config_digest") for arm, row in table.get("arms", {}).items() if row.get("config_digest")}
    if digests and table.get("seeds"):
        order = [arm for arm in table.get("arm_order", digests) if arm in digests]
        listed = ", ".join(f"{arm} {digests[arm]}" for arm in order)
        lines.append(f"Config digests (seed {table['seeds'][0]}): {listed}.")
    return lines


def find_comparison(run_dirs: Sequence[Path]) -> dict[str, Any] | None:
    """The ``comparison.json`` of the ``sedi compare`` whose columns are exactly ``run_dirs`` (its directory is
    the runs' parent, or their grandparent with several seeds), or None."""
    if not run_dirs:
        return None
    wanted = [Path(d).resolve() for d in run_dirs]
    for where in (wanted[0].parent, wanted[0].parent.parent):
        path = where / "comparison.json"
        if not path.is_file():
            continue
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            arms = [a for a in table.get("arm_order", table["runs"]) if table["runs"].get(a)]
            shown = [Path(table["runs"][a][0]["run_dir"]).resolve() for a in arms]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # an unreadable or older table: the report compares the runs by their own counts
        if shown == wanted:
            return dict(table)
    return None
