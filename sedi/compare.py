"""``sedi compare``: the Self-Instruct baseline and SeDi side by side, on the same teacher, seeds, student,
seed value and budget, each in its own run directory (so each has its own cache and pays for itself).

Both runs stop the same way: at the same number of kept tasks (``--stop-at kept``: generation.target_kept,
rounds unbounded) or at the same budget (``--stop-at budget``: budget caps only). Every number in the
table is read back from the runs' databases, so the table and the runs cannot disagree.

Arms: ``self-instruct``, ``sedi-paper`` (the method as the paper states it: uniform prompts from the pool) and
``sedi`` (prompts steered by yield, ``feedback.steer``) share every generation setting (prompt style included),
so their differences are the method alone (similarity filter, batches, feedback, steering). ``published=True`` adds
``self-instruct-published``: the baseline as Wang et al. ran it, instruction-only prompts followed by a
classification call and an instance call per kept instruction, which is what a team moving from the
original Self-Instruct pipeline would compare against.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sedi import stats
from sedi._io import fsync_write
from sedi._types import ProgressHook
from sedi.config import SediConfig
from sedi.loop import run
from sedi.rundir import connect_readonly
from sedi.store import RunStore
from sedi.summary import read_summary

METHODS = ("self-instruct", "sedi-paper", "sedi")  # the order of a comparison's columns: baseline first
PUBLISHED = "self-instruct-published"
ARMS = (*METHODS, PUBLISHED)
StopAt = Literal["kept", "budget"]
# Rounds are not the stopping rule in a comparison; this only bounds a run whose filters keep nothing.
UNBOUNDED_ROUNDS = 1000
# (arm, baseline) pairs whose calls per kept task the table compares.
_PAIRS = (("sedi", "self-instruct"), ("sedi-paper", "self-instruct"), ("sedi", "sedi-paper"), ("sedi", PUBLISHED))

COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "API calls"),
    ("prompt_tokens", "prompt tokens"),
    ("completion_tokens", "completion tokens"),
    ("cost_usd", "cost (USD)"),
    ("candidates", "candidates"),
    ("kept", "kept"),
    ("keep_rate", "keep rate"),
    ("calls_per_kept", "calls per kept task"),
    ("tokens_per_kept", "tokens per kept task"),
    ("usd_per_kept", "cost per kept task (USD)"),
    ("diversity_mean_cosine_distance", "diversity: mean cosine distance"),
    ("diversity_vendi", "diversity: Vendi score"),
    ("topics_covered", "seed topics covered (of 32)"),
    ("heldout_loss", "held-out loss (student)"),
    ("heldout_rouge_l", "held-out ROUGE-L of greedy answers"),
    ("promotions", "promotions"),
    ("demotions", "demotions"),
    ("wall_seconds", "wall time (s)"),
)


def method_config(config: SediConfig, arm: str, stop_at: StopAt, seed: int) -> SediConfig:
    data = config.model_dump(mode="json")
    data["method"] = "sedi" if arm.startswith("sedi") else "self-instruct"
    if arm.startswith("sedi"):
        data["feedback"]["steer"] = arm == "sedi"
        data["feedback"]["in_context"] = "pool"
    if arm == PUBLISHED:
        data["generation"]["prompt_style"] = "self-instruct"
    data["run"]["seed"] = seed
    data["run"]["max_rounds"] = UNBOUNDED_ROUNDS
    if stop_at == "budget":
        data["generation"]["target_kept"] = 10**9
    return SediConfig.model_validate(data)


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run's numbers, from its database."""
    summary = read_summary(run_dir)
    row = {key: summary.get(key) for key, _ in COLUMNS}
    row.update(summary.get("diversity") or {})
    row["rejected_by_rule"] = summary["rejected_by_rule"]
    row["run_dir"] = str(run_dir)
    row["state"] = summary["state"]
    row["cost_known"] = summary["cost_known"]
    row["rounds"] = round_counts(run_dir)
    return row


def round_counts(run_dir: Path) -> list[tuple[float, float]]:
    """(calls, kept) of each round, from the cumulative counts each round records (a budget-stopped round too)."""
    db = connect_readonly(run_dir / RunStore.DB_NAME)
    try:
        rows = db.execute(
            "SELECT round, name, value FROM round_metrics WHERE name IN ('calls', 'kept') ORDER BY round"
        ).fetchall()
    finally:
        db.close()
    cumulative: dict[int, dict[str, float]] = {}
    for r, name, value in rows:
        cumulative.setdefault(int(r), {})[str(name)] = float(value)
    out, last = [], {"calls": 0.0, "kept": 0.0}
    for r in sorted(cumulative):
        now = {k: cumulative[r].get(k, last[k]) for k in last}
        out.append((now["calls"] - last["calls"], now["kept"] - last["kept"]))
        last = now
    return out


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, _ in COLUMNS:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.fmean(values)
            out[f"{key}_stdev"] = statistics.stdev(values) if len(values) > 1 else 0.0
    rules: dict[str, int] = {}
    for r in rows:
        for rule, n in r["rejected_by_rule"].items():
            rules[rule] = rules.get(rule, 0) + n
    out["rejected_by_rule"] = rules
    out["cost_known"] = all(r.get("cost_known", True) for r in rows)  # else the cost cells say "unknown", never 0
    return out


def _markdown(table: dict[str, Any]) -> str:
    per = table["arms"]
    repeat = table["repeat"]
    arms = list(per)
    lines = [f"| | {' | '.join(arms)} |", "|---|" + "---|" * len(arms)]
    for key, label in COLUMNS:
        cells = []
        for method in arms:
            value = per[method].get(key)
            if value is None:
                unknown = key in ("cost_usd", "usd_per_kept") and not per[method].get("cost_known", True)
                cells.append("unknown" if unknown else "–")
                continue
            spread = per[method].get(f"{key}_stdev")
            text = f"{value:,.4g}"
            cells.append(f"{text} ± {spread:.2g}" if repeat > 1 and spread else text)
        lines.append(f"| {label} | {' | '.join(cells)} |")
    rules = sorted({r for m in arms for r in per[m]["rejected_by_rule"]})
    for rule in rules:
        lines.append(f"| rejected: {rule} | {' | '.join(str(per[m]['rejected_by_rule'].get(rule, 0)) for m in arms)} |")
    footer = ""
    for name, r in table["ratios"].items():
        if r["ratio"] is None:
            continue
        arm, baseline = name.split(" over ")
        ci = f"95% interval {r['ci95'][0]:.3f} to {r['ci95'][1]:.3f}" if r["ci95"] else "no interval"
        footer += f"\nCalls per kept task, {arm} over {baseline}: {r['ratio']:.3f} ({ci}): {r['verdict']} calls."
        tokens, usd = ("n/a" if v is None else f"{v:.3f}x" for v in (r["tokens_per_kept"], r["usd_per_kept"]))
        cost = usd if r["cost_known"] else "unknown (no teacher.prices)"
        footer += f" Tokens per kept task: {tokens}; cost per kept task: {cost}.\n"
    seeds = table["seeds"]
    if len(seeds) > 1:
        footer += "\nPer seed, calls per kept task:\n\n| seed | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms)
        for i, seed in enumerate(seeds):
            cells = [table["runs"][m][i].get("calls_per_kept") for m in arms]
            footer += f"\n| {seed} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |"
        footer += "\n"
    return "\n".join(lines) + "\n" + (footer or "\n")


def pair_ratios(runs: dict[str, list[dict[str, Any]]], arm: str, baseline: str) -> dict[str, Any]:
    """``arm``'s calls per kept task over ``baseline``'s: pooled over seeds (sum of calls over sum of kept), its
    95% interval (the Poisson interval for one seed, the paired two-level bootstrap for several), the verdict
    and each seed's own ratio."""
    a, b = runs[baseline], runs[arm]
    calls_a, kept_a = sum(float(r["calls"] or 0) for r in a), sum(float(r["kept"] or 0) for r in a)
    calls_b, kept_b = sum(float(r["calls"] or 0) for r in b), sum(float(r["kept"] or 0) for r in b)
    point = stats.ratio(calls_a, kept_a, calls_b, kept_b)
    if len(a) > 1:
        interval = stats.bootstrap_ratio_ci([r["rounds"] for r in a], [r["rounds"] for r in b])
    else:
        interval = stats.poisson_ratio_ci(calls_a, kept_a, calls_b, kept_b)
    per_seed = [stats.ratio(x["calls"], x["kept"], y["calls"], y["kept"]) for x, y in zip(a, b, strict=True)]
    # Tokens and USD per kept task, pooled the same way; USD only when both arms' prices were known.
    tokens_a, tokens_b = (sum(float(r["prompt_tokens"] + r["completion_tokens"]) for r in x) for x in (a, b))
    known = all(r.get("cost_known", True) for r in a + b)
    usd_a, usd_b = (sum(float(r["cost_usd"] or 0) for r in x) for x in (a, b))
    return {
        "ratio": point,
        "ci95": list(interval) if interval else None,
        "verdict": stats.verdict(point, interval),
        "per_seed": per_seed,
        "tokens_per_kept": stats.ratio(tokens_a, kept_a, tokens_b, kept_b),
        "usd_per_kept": stats.ratio(usd_a, kept_a, usd_b, kept_b) if known else None,
        "cost_known": known,
    }


def compare(
    config: SediConfig,
    out_dir: Path,
    source: str,
    stop_at: StopAt = "kept",
    repeat: int = 1,
    progress: ProgressHook | None = None,
    on_run: Callable[[str, Path], None] | None = None,
    published: bool = False,
) -> dict[str, Any]:
    """Run every arm ``repeat`` times (seeds run.seed, run.seed + 1, ...) and write ``comparison.json`` and
    ``comparison.md`` into ``out_dir``; ``published`` adds the ``self-instruct-published`` arm."""
    arms = ARMS if published else METHODS
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in arms}
    for k in range(repeat):
        seed = config.run.seed + k
        for method in arms:
            run_dir = out_dir / (method if repeat == 1 else f"seed-{seed}/{method}")
            if on_run is not None:
                on_run(method, run_dir)
            run(method_config(config, method, stop_at, seed), run_dir, source, progress)
            runs[method].append(run_row(run_dir))
    per = {m: _aggregate(rows) for m, rows in runs.items()}
    ratios = {
        f"{arm} over {base}": pair_ratios(runs, arm, base) for arm, base in _PAIRS if arm in runs and base in runs
    }
    table: dict[str, Any] = {
        "arm_order": list(arms),  # column order (the JSON's keys are sorted)
        "stop_at": stop_at,
        "repeat": repeat,
        "seeds": [config.run.seed + k for k in range(repeat)],
        "arms": per,  # each arm's means (and spreads) over its seeds
        "runs": runs,
        "ratios": ratios,
        "calls_per_kept_ratio": ratios["sedi over self-instruct"]["ratio"],
        "calls_per_kept_ratio_ci95": ratios["sedi over self-instruct"]["ci95"],
        "calls_per_kept_ratio_paper": ratios["sedi-paper over self-instruct"]["ratio"],
        "calls_per_kept_ratio_paper_ci95": ratios["sedi-paper over self-instruct"]["ci95"],
        "tokens_per_kept_ratio": ratios["sedi over self-instruct"]["tokens_per_kept"],
        "tokens_per_kept_ratio_paper": ratios["sedi-paper over self-instruct"]["tokens_per_kept"],
        "usd_per_kept_ratio": ratios["sedi over self-instruct"]["usd_per_kept"],  # null: prices unknown
        "usd_per_kept_ratio_paper": ratios["sedi-paper over self-instruct"]["usd_per_kept"],
    }
    if published:
        table["calls_per_kept_ratio_published"] = ratios[f"sedi over {PUBLISHED}"]["ratio"]
    out_dir.mkdir(parents=True, exist_ok=True)
    fsync_write(out_dir / "comparison.json", json.dumps(table, indent=2, sort_keys=True))
    fsync_write(out_dir / "comparison.md", _markdown(table))
    return table
