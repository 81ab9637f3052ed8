"""``sedi compare``: named arms (:mod:`.arms`) side by side, on the same teacher, seeds, student, seed value and
budget, each in its own run directory (so each has its own cache and pays for itself).

Every arm stops the same way: at the same number of kept tasks (``--stop-at kept``: generation.target_kept,
rounds unbounded) or at the same budget (``--stop-at budget``: budget caps only); :func:`experiment.arms.resolve` sets
those run controls on every arm alike. Every number in the table is read back from the runs' databases, so the
table and the runs cannot disagree.

The arms are ``--arms a,b,c`` (default ``self-instruct,default``: the baseline against exactly what ``sedi run``
ships); the first is the baseline, and every other arm gets its calls per kept task over the baseline's with a
95% interval and a verdict (``ratios["<arm> over <baseline>"]``). The top-level keys that scripts read keep one
meaning: ``calls_per_kept_ratio`` (with ``_ci95``, ``tokens_per_kept_ratio``, ``usd_per_kept_ratio``) is the
``default`` arm over ``self-instruct``; ``..._paper`` is ``sedi-paper`` over ``self-instruct``;
``calls_per_kept_ratio_published`` is ``default`` over ``self-instruct-published``; each is null when either of
its arms did not run. ``config_digest`` (per arm) is :meth:`SediConfig.digest` of the config the arm ran under
the comparison's first seed (``run.seed``); each run row has the digest of its own seed's config, the one its
database records.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sedi.base.files import fsync_write
from sedi.base.vocabulary import ProgressHook
from sedi.config.model import SediConfig
from sedi.experiment.arms import ARMS, DEFAULT_ARMS, StopAt, parse_arms, resolve
from sedi.loop import run
from sedi.report import stats
from sedi.report.arm_stats import ratio_words
from sedi.report.summary import read_summary
from sedi.store.db import RunStore
from sedi.store.report_queries import metric_values
from sedi.store.rundir import connect_readonly

# One run of a comparison: its name (the arm, and its seed when there are several), its config and its directory.
Job = tuple[str, SediConfig, Path]
# Top-level key suffix -> (arm, baseline) of the ratios scripts read; null where either arm did not run.
HEADLINE = {"": ("default", "self-instruct"), "_paper": ("sedi-paper", "self-instruct")}
HEADLINE |= {"_published": ("default", "self-instruct-published"), "_steer": ("sedi-steer", "sedi-paper")}

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


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run's numbers, from its database."""
    summary = read_summary(run_dir)
    row = {key: summary.get(key) for key, _ in COLUMNS}
    row.update(summary.get("diversity") or {})
    row["rejected_by_rule"] = summary["rejected_by_rule"]
    row["run_dir"] = str(run_dir)
    row["state"] = summary["state"]
    row["cost_known"] = summary["cost_known"]
    row["cost_upper_bound"] = bool(summary.get("cost_upper_bound"))  # charged worst cases: "at most", never less
    row["rounds"] = round_counts(run_dir)
    return row


def round_counts(run_dir: Path) -> list[tuple[float, float]]:
    """(calls, kept) of each round, from the cumulative counts each round records (a budget-stopped round too)."""
    db = connect_readonly(run_dir / RunStore.DB_NAME)
    try:
        rows = metric_values(db, ("calls", "kept"))
    finally:
        db.close()
    cumulative: dict[int, dict[str, float]] = {}
    for r, name, value in rows:
        cumulative.setdefault(r, {})[name] = value
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
    out["cost_upper_bound"] = any(r.get("cost_upper_bound") for r in rows)
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
            bound = key in ("cost_usd", "usd_per_kept") and per[method].get("cost_upper_bound")
            text = f"at most {value:,.4g}" if bound else f"{value:,.4g}"
            cells.append(f"{text} ± {spread:.2g}" if repeat > 1 and spread else text)
        lines.append(f"| {label} | {' | '.join(cells)} |")
    rules = sorted({r for m in arms for r in per[m]["rejected_by_rule"]})
    for rule in rules:
        lines.append(f"| rejected: {rule} | {' | '.join(str(per[m]['rejected_by_rule'].get(rule, 0)) for m in arms)} |")
    if "config_digest" in per[arms[0]]:
        seed = table["seeds"][0]
        lines.append(f"| config digest (seed {seed}) | {' | '.join(str(per[m]['config_digest']) for m in arms)} |")
    footer = "".join(f"\n- {arm}: {text}" for arm, text in table.get("descriptions", {}).items())
    footer += "\n" if footer else ""
    for name, r in table["ratios"].items():
        footer += f"\nCalls per kept task, {name}: {ratio_words(r)}."
        tokens, usd = ("n/a" if v is None else f"{v:.3f}x" for v in (r["tokens_per_kept"], r["usd_per_kept"]))
        cost = usd if r["cost_known"] else "unknown (no teacher.prices, or usage not reported)"
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


def tabulate(runs: dict[str, list[dict[str, Any]]], seeds: list[int], stop_at: StopAt) -> dict[str, Any]:
    """The comparison table from each arm's run rows (:func:`run_row`, seeds in order; the first arm is the
    baseline): means, every other arm's ratio over the baseline and the headline keys scripts read."""
    arms = list(runs)
    per = {arm: _aggregate(rows) | {"config_digest": rows[0].get("config_digest")} for arm, rows in runs.items()}
    baseline = arms[0]
    pairs = [(arm, baseline) for arm in arms[1:]]
    pairs += [pair for pair in HEADLINE.values() if pair not in pairs and all(a in runs for a in pair)]
    ratios = {f"{arm} over {base}": pair_ratios(runs, arm, base) for arm, base in pairs}
    table: dict[str, Any] = {
        "arm_order": arms,  # column order (the JSON's keys are sorted); the first is the baseline
        "baseline": baseline,
        "descriptions": {arm: ARMS[arm].description for arm in arms if arm in ARMS},
        "stop_at": stop_at,
        "repeat": len(seeds),
        "seeds": seeds,
        "arms": per,  # each arm's means (and spreads) over its seeds, and its config digest
        "runs": runs,
        "ratios": ratios,
    }
    for suffix, (arm, base) in HEADLINE.items():
        pair = ratios.get(f"{arm} over {base}") or {}
        table[f"calls_per_kept_ratio{suffix}"] = pair.get("ratio")
        table[f"calls_per_kept_ratio{suffix}_ci95"] = pair.get("ci95")
        table[f"tokens_per_kept_ratio{suffix}"] = pair.get("tokens_per_kept")
        table[f"usd_per_kept_ratio{suffix}"] = pair.get("usd_per_kept")  # null: prices unknown or arm absent
    return table


def run_jobs(
    jobs: Sequence[Job], source: str, progress: ProgressHook | None, on_run: Callable[[str, Path], None] | None
) -> None:
    """Run every (name, config, run_dir) job, one after another."""
    for name, config, run_dir in jobs:
        if on_run is not None:
            on_run(name, run_dir)
        run(config, run_dir, source, progress)


def _run_together(jobs: Sequence[Job], log_dir: Path, source: str, on_run: Callable[[str, Path], None] | None) -> None:
    """Every job at once against one shared embedded teacher (sedi.experiment.parallel); each run's output goes to
    ``log_dir/NAME.log``. A failed run does not stop the others; the comparison fails after they all end."""
    from sedi.experiment.parallel import run_jobs as run_parallel  # imported here: only --parallel needs it

    for name, _, run_dir in jobs:
        if on_run is not None:
            on_run(name, run_dir)
    failed = [r for r in run_parallel(jobs, log_dir, source, max_training=_students_at_once()) if not r.ok]
    if failed:
        detail = "; ".join(f"{r.name}: {r.state}: {r.message} (log {log_dir / r.name}.log)" for r in failed)
        raise RuntimeError(f"{len(failed)} of {len(jobs)} runs failed: {detail}")


def _students_at_once() -> int | None:
    """How many runs of a parallel comparison may use their student at once: one on a machine without a GPU. A
    training round of the bundled student peaked at 11.8 GB (its logits over a 262k-token vocabulary, 8 seed tasks
    a step), runs of the 150-call benchmark held 3.5 to 5 GB each, and six at once on a 24 GiB machine met the
    kernel's out-of-memory killer (2026-12-06); on shared CPU cores a second training only slows the first."""
    import torch

    return None if torch.cuda.is_available() else 1


def compare(
    config: SediConfig,
    out_dir: Path,
    source: str,
    stop_at: StopAt = "kept",
    repeat: int = 1,
    progress: ProgressHook | None = None,
    on_run: Callable[[str, Path], None] | None = None,
    arms: Sequence[str] = DEFAULT_ARMS,
    parallel: bool = False,
) -> dict[str, Any]:
    """Run every arm (names from :data:`experiment.arms.ARMS`, the first the baseline) ``repeat`` times (seeds run.seed,
    run.seed + 1, ...) and write ``comparison.json`` and ``comparison.md`` into ``out_dir``. ``parallel``: all the runs
    at once, each in its own process, against one shared embedded teacher (:mod:`experiment.parallel`); else one after
    another in this process."""
    arms = parse_arms(",".join(arms))  # an unknown or retired name: one line, before any run
    seeds = [config.run.seed + k for k in range(repeat)]
    planned = [(arm, seed, resolve(config, arm, seed, stop_at)) for seed in seeds for arm in arms]  # all, then run
    # Job names are unique (the arm, with its seed when there are several), as sedi.experiment.parallel.run_jobs needs.
    jobs: list[Job] = [
        (arm if repeat == 1 else f"seed-{seed}-{arm}", cfg, out_dir / (arm if repeat == 1 else f"seed-{seed}/{arm}"))
        for arm, seed, cfg in planned
    ]
    if parallel:
        _run_together(jobs, out_dir / "logs", source, on_run)
    else:
        run_jobs(jobs, source, progress, on_run)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for (arm, _, cfg), (_, _, run_dir) in zip(planned, jobs, strict=True):  # seeds in order: runs[arm][i] is seed i
        runs[arm].append(run_row(run_dir) | {"config_digest": cfg.digest()})
    table = tabulate(runs, seeds, stop_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    fsync_write(out_dir / "comparison.json", json.dumps(table, indent=2, sort_keys=True))
    fsync_write(out_dir / "comparison.md", _markdown(table))
    return table
