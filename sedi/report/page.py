"""``sedi report``: one self-contained HTML page that explains a run (or compares two) in a minute.

The page opens with a plain-language paragraph and a table of the numbers that matter (calls, kept tasks,
calls per kept task, held-out loss, diversity, seed-pool changes), then one plot per question, each with a
sentence saying how to read it. Images are embedded as data URIs and the CSS is inline, so the file can be
mailed or attached to an issue and still open anywhere; the same plots are also written as PNG files.

The database is opened read-only, so a report can be made while a run is still going on; tables or metrics
a run has not produced yet give empty plots that say so, never an error.
"""

from __future__ import annotations

import html
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml

from sedi.base.redact import redact
from sedi.base.vocabulary import DEMOTE, PROMOTE
from sedi.exceptions import RunDirError
from sedi.report import arm_stats, stats
from sedi.report import feedback as _report_feedback
from sedi.report import html as _report_html
from sedi.report import plots as _plots
from sedi.report.plots import PoolRound, StepPoint
from sedi.report.summary import read_summary
from sedi.store import report_queries as queries
from sedi.store.db import RunStore
from sedi.store.ledger import cost_text
from sedi.store.rundir import connect_readonly


@dataclass
class RunData:
    """Everything the report shows about one run, read from its database."""

    run_dir: Path
    method: str
    summary: dict[str, Any]
    kept_curve: list[int] = field(default_factory=list)  # kept tasks after call i + 1
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)  # name -> round -> value
    round_keep_rate: dict[int, float] = field(default_factory=dict)
    steps: list[StepPoint] = field(default_factory=list)
    pool: dict[int, PoolRound] = field(default_factory=dict)
    promotions: int = 0
    demotions: int = 0
    rounds: dict[int, dict[str, float]] = field(default_factory=dict)  # per-round feedback numbers
    choices: str | None = None  # the method's choices in force, in words
    label: str = ""  # how series are named; default "<method> (<directory name>)"

    def __post_init__(self) -> None:
        # The method says what was run, the directory which run it was.
        self.label = self.label or f"{self.method} ({self.run_dir.name})"


# Every query the report makes is a ``report_*`` reader of sedi.store.report_queries; each reads what one plot or
# table row needs, and a table this run's schema lacks reads as empty (older or partial run dirs).


def _method(config_body: str | None) -> str:
    try:
        config = yaml.safe_load(config_body) if config_body else None
    except yaml.YAMLError:
        config = None
    method = config.get("method") if isinstance(config, dict) else None
    return str(method) if method else "unknown method"


def _kept_curve(db: sqlite3.Connection) -> list[int]:
    """Kept tasks so far after each call, crediting a task to the call whose response produced it."""
    kept_by_call = queries.report_kept_by_call(db)
    return list(accumulate(kept_by_call.get(call_id, 0) for call_id in queries.report_call_ids(db)))


def _pool(db: sqlite3.Connection, metrics: dict[str, dict[int, float]]) -> dict[int, PoolRound]:
    """Pool sizes come from the round metrics; promotions and demotions are counted in the seed history."""
    moves = {(m.round, m.action): m.times for m in queries.report_moves(db)}
    size, machine = metrics.get("seed_pool_size", {}), metrics.get("seed_pool_machine", {})
    return {
        r: PoolRound(
            human=size[r] - machine.get(r, 0.0) if r in size else None,
            machine=machine.get(r),
            promoted=moves.get((r, PROMOTE), 0),
            demoted=moves.get((r, DEMOTE), 0),
        )
        for r in sorted(set(size) | {r for r, _ in moves})
    }


def load_run(run_dir: Path) -> RunData:
    """Read one run directory (read-only; works while the run is going on)."""
    db_path = run_dir / RunStore.DB_NAME
    if not db_path.is_file():
        raise RunDirError(
            f"{run_dir}: no sedi run here (missing {RunStore.DB_NAME}): pass a directory made by 'sedi run --run-dir'"
        )
    summary = read_summary(run_dir)
    db = connect_readonly(db_path)
    try:
        metrics: dict[str, dict[int, float]] = {}
        for r, name, value in queries.report_metrics(db):
            metrics.setdefault(name, {})[r] = value
        # Prefer the loop's own measure; else count verdicts as read_summary does (kept / all candidates).
        keep = metrics.get("keep_rate") or queries.report_keep_rates(db)
        steps = [StepPoint(*step) for step in queries.report_steps(db)]
        moves = queries.report_move_totals(db)
        config = queries.report_config_body(db)
        return RunData(
            run_dir, _method(config), summary, _kept_curve(db), metrics, keep, steps, _pool(db, metrics),
            promotions=moves.get(PROMOTE, 0), demotions=moves.get(DEMOTE, 0),
            choices=_report_feedback.choices(config),
            rounds=_report_feedback.per_round(db),
        )  # fmt: skip
    finally:
        db.close()


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _field(*keys: str, fmt: str = "{:,.0f}", scale: float = 1.0) -> Callable[[RunData], str]:
    """A table cell straight from the store's summary (the numbers ``sedi status`` prints), summing ``keys``."""
    return lambda r: _num(None if r.summary[keys[0]] is None else scale * sum(r.summary[k] for k in keys), fmt)


def _cost(run: RunData, key: str, digits: int) -> str:
    """A cost cell: "$X", "at most $X" when usage went unreported (charged its worst case), never $0 for it."""
    if run.summary.get("cost_usd") is not None and run.summary.get(key) is None:
        return "n/a"  # nothing kept yet
    return cost_text(run.summary, digits, key)


def _last(metric: str) -> Callable[[RunData], str]:
    """A table cell with the metric at the latest round that has it (runs can stop mid-way), shown from 1."""

    def cell(run: RunData) -> str:
        by_round = run.metrics.get(metric)
        if not by_round:
            return "n/a"
        # A round the budget stopped before any call still records its (unchanged) metrics: name the round that
        # produced the value, the last one whose calls grew, not the one that generated nothing.
        calls = run.metrics.get("calls", {})
        grew = [r for r in by_round if r not in calls or calls.get(r - 1) is None or calls[r] > calls[r - 1]]
        last = max(grew or by_round)
        return f"{by_round[last]:.3f} (round {last + 1})"

    return cell


def _time_split(run: RunData) -> str:
    """Where the run's round time went: the total seconds of each part (``seconds_<part>``), largest first."""
    parts = {n.removeprefix("seconds_"): sum(v.values()) for n, v in run.metrics.items() if n.startswith("seconds_")}
    total = sum(parts.values())
    if not total:
        return "n/a"
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {sec:,.0f} s ({sec / total:.0%})" for name, sec in ranked)


# row key -> (heading, cell); the key is a stable hook for tests and scripts reading the page.
_ROWS: dict[str, tuple[str, Callable[[RunData], str]]] = {
    "state": ("State", lambda r: str(r.summary["state"])),
    "calls": ("Teacher calls", _field("calls")),
    "tokens": ("Tokens (prompt + completion)", _field("prompt_tokens", "completion_tokens")),
    "cached_share": ("Cached share of prompt tokens", lambda r: _field("cached_share", fmt="{:.1f}%", scale=100)(r)
                     if "cached_share" in r.summary else "n/a"),
    "cost_usd": ("Cost (USD)", lambda r: _cost(r, "cost_usd", 4)),
    "candidates": ("Candidate tasks", _field("candidates")),
    "kept": ("Kept tasks", _field("kept")),
    "keep_rate": ("Keep rate", _field("keep_rate", fmt="{:.1f}%", scale=100)),
    "calls_per_kept": ("Calls per kept task", _field("calls_per_kept", fmt="{:.3f}")),
    "tokens_per_kept": ("Tokens per kept task (prompt + completion)", _field("tokens_per_kept")),
    "usd_per_kept": ("Cost per kept task (USD)", lambda r: _cost(r, "usd_per_kept", 6)),
    "heldout_loss": ("Held-out loss, last round", _last("heldout_loss")),
    "heldout_rouge_l": ("Held-out ROUGE-L of greedy answers, last round", _last("heldout_rouge_l")),
    "diversity_cosine": ("Diversity: mean cosine distance, last round", _last("diversity_mean_cosine_distance")),
    "diversity_vendi": ("Diversity: Vendi score, last round", _last("diversity_vendi")),
    "promotions": ("Seed promotions", lambda r: _num(r.promotions)),
    "demotions": ("Seed demotions", lambda r: _num(r.demotions)),
    "time_split": ("Round time by part (wall seconds)", _time_split),
}  # fmt: skip

# Rows where one direction is better: their heading says which, and in a comparison the best cell is marked.
_BETTER = {"keep_rate": "higher", "calls_per_kept": "lower", "tokens_per_kept": "lower", "usd_per_kept": "lower",
           "heldout_loss": "lower", "heldout_rouge_l": "higher", "diversity_cosine": "higher",
           "diversity_vendi": "higher"}  # fmt: skip


def _best(key: str, cells: list[str]) -> set[int]:
    """Which of a row's cells hold its better value, compared as shown (so two cells that read the same tie), and
    only when every run has the number at the same round ("2.200 (round 2)"): none outside a comparison."""
    if key not in _BETTER or len(cells) < 2 or any(cell == "n/a" or cell.startswith("unknown") for cell in cells):
        return set()
    shown = [cell.split(" ", 1) for cell in cells]
    if len({tuple(rest) for _, *rest in shown}) > 1:
        return set()
    values = [float(number.strip("$%").replace(",", "")) for number, *_ in shown]
    best = min(values) if _BETTER[key] == "lower" else max(values)
    return set() if len(set(values)) == 1 else {i for i, v in enumerate(values) if v == best}


@dataclass(frozen=True)
class _Plot:
    """One plot of the page: its file name, how to read it, and how to pick its data out of the runs."""

    name: str
    caption: str
    data: Callable[[list[RunData]], tuple[dict[str, Any], ...]]
    draw: Callable[..., bytes]

    def png(self, runs: list[RunData]) -> bytes:
        return self.draw(*self.data(runs))

    def empty(self, runs: list[RunData]) -> bool:
        return not _plots.has_data(*self.data(runs))


def _each(*getters: Callable[[RunData], Any]) -> Callable[[list[RunData]], tuple[dict[str, Any], ...]]:
    """Plot arguments: for each getter, a mapping of run label to that run's data."""
    return lambda runs: tuple({run.label: get(run) for run in runs} for get in getters)


def _metric(name: str) -> Callable[[RunData], dict[int, float]]:
    return lambda run: run.metrics.get(name, {})


PLOTS: list[_Plot] = [
    _Plot("calls_vs_kept", "Each line steps up by the tasks kept from each teacher call, and ends at the run's "
          "total: the steeper and higher it is, the fewer teacher calls each kept task cost.",
          _each(lambda r: r.kept_curve), _plots.calls_vs_kept),
    _Plot("keep_rate", "The share of each round's candidate tasks that passed every filter; higher bars mean less "
          "of the teacher's output was thrown away.", _each(lambda r: r.round_keep_rate), _plots.keep_rate),
    _Plot("grad_norms", "The student's gradient norm at each optimizer step; stars mark the attractive batches "
          "whose tasks were promoted into the seed pool, and dashed vertical lines separate rounds.",
          _each(lambda r: r.steps), _plots.grad_norms),
    _Plot("seed_pool", "Top: the seed pool at the end of each round, human seeds (light grey) under the machine "
          "seeds promoted from training (dark grey), with the total and, in brackets, the machine seeds written on "
          "each bar. Bottom: the tasks promoted "
          "into the pool (green) and demoted out of it (red) in that round.",
          _each(lambda r: r.pool), _plots.seed_pool),
    _Plot("heldout_loss", "The student's loss on held-out user tasks after each evaluated round, against the "
          "teacher cost paid by then (USD when prices are set, else calls); a line going down means the student "
          "is learning to follow unseen instructions, and where it flattens more data stopped paying for itself "
          "(what run.stop_when judges).", _each(_metric("heldout_loss"), _metric("calls"), _metric("cost_usd")),
          _plots.heldout_loss),
    _Plot("diversity", "How different the kept tasks are from each other: left, the mean pairwise cosine distance "
          "of their embeddings; right, the Vendi score (an effective number of distinct tasks). Higher is more "
          "diverse.", _each(_metric("diversity_mean_cosine_distance"), _metric("diversity_vendi")),
          _plots.diversity),
    _Plot("rejects_by_rule", "How many candidates each filter rule rejected (at most the ten most frequent rules; "
          "no bar: none); the longest bar is where most teacher output was lost.",
          _each(lambda r: {rule or "(no rule)": n for rule, n in r.summary["rejected_by_rule"].items()}),
          _plots.rejects_by_rule),
]  # fmt: skip


def _name(runs: list[RunData], i: int) -> str:
    """A run's name on the page, after a square of its colour in the plots."""
    return _report_html.swatch(_plots.colour(i)) + f"<b>{html.escape(runs[i].label)}</b>"


def _paragraph(runs: list[RunData], note: str | None = None) -> str:
    """The plain-language summary: what ran, how far it got, and what each kept task cost (as in the table)."""
    items = []
    for i, run in enumerate(runs):
        cell = {key: html.escape(get(run)) for key, (_, get) in _ROWS.items()}
        cost = f"keep rate {cell['keep_rate']}, {cell['calls_per_kept']} teacher calls per kept task"
        items.append(
            f"{_name(runs, i)} (method {html.escape(run.method)}, state {cell['state']}) made {cell['calls']} teacher"
            f" calls; {cell['kept']} of {cell['candidates']} candidate tasks were kept"
            f" ({cost if run.summary['calls_per_kept'] is not None else 'no task has been kept yet'})."
            + (f" It ended: {html.escape(run.summary['outcome'])}." if run.summary.get("outcome") else "")
        )
    note = None if note is None else html.escape(note)
    comparison = arm_stats.find_comparison([run.run_dir for run in runs])
    if comparison is not None:  # a sedi compare: every arm over the baseline, as comparison.md says it
        return _report_html.lead(items, "<br>".join(map(html.escape, arm_stats.comparison_sentences(comparison))), note)
    if len(runs) != 2:
        return _report_html.lead(items, None, note)
    (calls_a, kept_a), (calls_b, kept_b) = ((r.summary["calls"], r.summary["kept"]) for r in runs)
    point, interval = (
        stats.ratio(calls_a, kept_a, calls_b, kept_b),
        stats.poisson_ratio_ci(calls_a, kept_a, calls_b, kept_b),
    )
    if point is None or interval is None:
        return _report_html.lead(items, "Calls per kept task cannot be compared yet: a run has kept no task.", note)
    words = stats.verdict(point, interval)
    meaning = (
        "within the noise of these counts" if words.startswith("no clear") else "outside the noise of these counts"
    )
    return _report_html.lead(
        items, f"{_name(runs, 1)} needed {point:.2f}× the calls per kept task of {_name(runs, 0)} (95% interval "
        f"{interval[0]:.2f}× to {interval[1]:.2f}× for {kept_b} against {kept_a} kept tasks): {words} teacher calls "
        f"for each kept task, {meaning}.", note,
    )  # fmt: skip


def _table(runs: list[RunData]) -> str:
    heads = [f"{_name(runs, i)}<br><small>{html.escape(str(r.run_dir))}</small>" for i, r in enumerate(runs)]
    rows = []
    for key, (name, cell) in _ROWS.items():
        cells = [cell(run) for run in runs]
        heading = name + (f" <small>({_BETTER[key]} is better)</small>" if key in _BETTER else "")
        # Spend per kept task is marked only where the 95% interval of the ratio to the first run excludes 1.
        better = arm_stats.clearly_better(key, [r.summary for r in runs]) if key in arm_stats.SPEND else None
        rows.append((key, heading, cells, _best(key, cells) if better is None else better))
    return _report_html.table(heads, rows, compared=len(runs) > 1)


def render_html(runs: list[RunData], images: dict[str, bytes], note: str | None = None) -> str:
    """The page itself; ``images`` maps each plot's name to its PNG bytes; ``note`` (plain text) ends the lead."""
    title = "sedi report: " + " vs ".join(r.label for r in runs)
    subtitle = " vs ".join(_name(runs, i) for i in range(len(runs)))
    figures = [_report_html.figure(p.name, images[p.name], p.caption, p.empty(runs)) for p in PLOTS]
    feedback = "".join(_report_feedback.section(_name(runs, i), r.choices, r.rounds) for i, r in enumerate(runs))
    table = _table(runs) + (f"<h2>Feedback per round</h2>{feedback}" if feedback else "")
    table += _report_html.shapes([_name(runs, i) for i in range(len(runs))], [r.summary for r in runs])
    return _report_html.page(title, subtitle, _paragraph(runs, note), table, figures)


def write_report(run_dirs: list[Path], out_dir: Path, labels: list[str] | None = None, note: str | None = None) -> Path:
    """Write ``out_dir/report.html`` and each plot as ``out_dir/report/<name>.png``; return the HTML path.
    ``labels`` name the runs (default "<method> (<directory name>)"); ``note`` is a sentence for the lead."""
    if not run_dirs:
        raise ValueError("write_report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    for run, label in zip(runs, labels or [], strict=False):
        run.label = label
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):  # same method and directory name: name runs by their full path
        for run in runs:
            run.label = f"{run.method} ({run.run_dir})"
    png_dir, page = out_dir / "report", out_dir / "report.html"
    images = {plot.name: plot.png(runs) for plot in PLOTS}
    text = redact(render_html(runs, images, note))  # no credential on the page, whatever a run recorded
    try:  # a read-only run directory (the default --out) or a bad --out: one line, not a traceback
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, png in images.items():
            (png_dir / f"{name}.png").write_bytes(png)
        page.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RunDirError(
            f"{out_dir}: cannot write the report there ({exc.strerror or exc}): pass --out with a writable directory"
        ) from None
    return page
