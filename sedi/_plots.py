"""The report's plots: each takes plain data (one entry per run, keyed by its label) and returns PNG bytes.

Rounds are passed as the store keeps them (0-based) and shown from 1, as ``sedi run`` prints them.

Plots never see a database, so they can be tested on hand-made numbers and reused by other front ends.
Every plot puts all runs on one figure with the same colour per run (the order of the mapping), so a
comparison reads at a glance. Missing data is normal (a run still generating has no training yet): a plot
with nothing to show renders its title and a short "no data yet" note instead of failing.

matplotlib is imported inside the functions: importing it costs about a second, which the CLI should not
pay for commands that draw nothing. Figures are built with the object API (no pyplot), so nothing touches
global backend state or leaks figures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence, Sized
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

FIGSIZE = (7.0, 4.0)
DPI = 110
NO_DATA = "no data yet"
ATTRACTIVE_LABEL = "attractive batch (promoted)"


class StepPoint(NamedTuple):
    """One optimizer step of the student: its round, global step, gradient norm and feedback flag."""

    round: int
    step: int
    grad_norm: float
    attractive: bool


class PoolRound(NamedTuple):
    """The seed pool at the end of a round, and how many tasks were promoted or demoted in it."""

    human: float | None
    machine: float | None
    promoted: int
    demoted: int


def has_data(*series: Mapping[str, Sized]) -> bool:
    """Whether any run has anything to draw; the report uses the same rule to caption empty plots."""
    return any(len(values) for one in series for values in one.values())


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty(title: str, what: str) -> bytes:
    """A figure that says plainly that there is nothing to plot yet, and what would appear."""
    fig, (ax,) = _figure()
    ax.set_title(title)
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{NO_DATA}\n({what})", ha="center", va="center", fontsize=13, color="0.35")
    return _png(fig)


def _style(i: int) -> dict[str, Any]:
    """A run's look in every plot: its own colour, marker and dash, so identical series stay visible."""
    return {"color": f"C{i}", "marker": "os^Dv"[i % 5], "linestyle": ["-", "--", ":", "-."][i % 4]}


def _counts(axis: Axis) -> None:
    """Counts are whole numbers: no 0.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax: Axes, loc: Literal["best", "upper left", "lower right"] = "best") -> None:
    """A legend only when it tells something: more than one labelled artist."""
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.legend(fontsize=8, framealpha=0.85, loc=loc)


def _round_axis(ax: Axes, rounds: set[int]) -> None:
    """Tick each round (a fractional round would mislead), numbered from 1 as the CLI's progress shows them."""
    ordered = sorted(rounds)
    ax.set_xticks(ordered, [str(r + 1) for r in ordered])
    ax.set_xlabel("round")
    if len(ordered) == 1:
        ax.set_xlim(ordered[0] - 1, ordered[0] + 1)


def _round_lines(ax: Axes, series: Mapping[str, Mapping[int, float]], ylabel: str) -> None:
    """One marked line per run over rounds (few points, so the markers carry the reading)."""
    rounds: set[int] = set()
    for i, (label, by_round) in enumerate(series.items()):
        xs = sorted(by_round)
        rounds.update(xs)
        ax.plot(xs, [by_round[r] for r in xs], label=label, **_style(i))
    _round_axis(ax, rounds)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _legend(ax)


def calls_vs_kept(curves: Mapping[str, Sequence[int]]) -> bytes:
    """Cumulative kept tasks after each teacher call (``curve[i]`` = kept after call ``i + 1``)."""
    title = "Kept tasks vs teacher calls (cumulative)"
    if not has_data(curves):
        return _empty(title, "no teacher calls recorded")
    fig, (ax,) = _figure()
    for i, (label, curve) in enumerate(curves.items()):
        style = {**_style(i), "marker": None}  # one point per call: markers would clutter
        ax.step(range(len(curve) + 1), [0, *curve], where="post", label=label, **style)
    ax.set_title(title)
    ax.set_xlabel("teacher calls (cumulative, count)")
    ax.set_ylabel("kept tasks (cumulative, count)")
    top = max(curve[-1] if curve else 0 for curve in curves.values())
    if top == 0:  # a flat line on the axis is easy to miss: say it
        ax.text(0.5, 0.5, "no task kept yet", transform=ax.transAxes, ha="center", fontsize=12, color="0.35")
    ax.set_xlim(left=0)
    ax.set_ylim(0, max(top, 1) * 1.08)
    _counts(ax.xaxis)
    _counts(ax.yaxis)
    ax.grid(alpha=0.3)
    _legend(ax, loc="upper left")
    return _png(fig)


def keep_rate(rates: Mapping[str, Mapping[int, float]]) -> bytes:
    """Share of candidates kept, per round: grouped bars, one colour per run."""
    title = "Keep rate per round"
    if not has_data(rates):
        return _empty(title, "no candidate tasks judged")
    fig, (ax,) = _figure()
    width = 0.8 / len(rates)
    rounds: set[int] = set()
    for i, (label, by_round) in enumerate(rates.items()):
        xs = sorted(by_round)
        rounds.update(xs)
        offset = (i - (len(rates) - 1) / 2) * width
        bars = ax.bar([x + offset for x in xs], [100 * by_round[x] for x in xs], width, color=f"C{i}", label=label)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8, padding=2)
    _round_axis(ax, rounds)
    ax.set_title(title)
    ax.set_ylabel("candidates kept (%)")
    ax.set_ylim(0, 110)
    _legend(ax)
    return _png(fig)


def grad_norms(runs: Mapping[str, Sequence[StepPoint]]) -> bytes:
    """Gradient norm per optimizer step; attractive (promoting) steps marked; rounds split by faint lines."""
    title = "Student gradient norm per training step"
    if not has_data(runs):
        return _empty(title, "no training steps recorded")
    fig, (ax,) = _figure()
    marked, boundaries = False, set[float]()
    for i, (label, steps) in enumerate(runs.items()):
        pts = sorted(steps, key=lambda p: p.step)
        if not pts:
            continue
        style = {**_style(i), "marker": None}
        ax.plot([p.step for p in pts], [p.grad_norm for p in pts], lw=1.2, label=label, **style)
        hot = [p for p in pts if p.attractive]
        if hot:
            name = ATTRACTIVE_LABEL if len(runs) == 1 else f"{label}: {ATTRACTIVE_LABEL}"
            ax.scatter(
                [p.step for p in hot], [p.grad_norm for p in hot], marker="*", s=140, color=f"C{i}",
                edgecolors="black", linewidths=0.7, zorder=3, label=name,
            )  # fmt: skip
            marked = True
        for prev, cur in pairwise(pts):
            if cur.round != prev.round and (x := (prev.step + cur.step) / 2) not in boundaries:
                boundaries.add(x)
                ax.axvline(x, color="0.55", lw=0.9, ls="--", alpha=0.6)
                ax.annotate(f"round {cur.round + 1}", (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                            textcoords="offset points", fontsize=8, color="0.4")  # fmt: skip
    ax.set_title(title + ("" if marked else " (no attractive batch yet)"))
    ax.set_xlabel("optimizer step (global across rounds; dashed lines = new round)")
    ax.set_ylabel("gradient norm (L2)")
    ax.grid(alpha=0.3)
    _counts(ax.xaxis)
    handles, _ = ax.get_legend_handles_labels()
    if marked or len(handles) > 1:
        ax.legend(fontsize=8, framealpha=0.85)
    return _png(fig)


def seed_pool(runs: Mapping[str, Mapping[int, PoolRound]]) -> bytes:
    """Seed pool size per round, human and machine stacked; promotions and demotions as marked counts."""
    title = "Seed pool over rounds"
    if not has_data(runs):
        return _empty(title, "no seed-pool metrics recorded")
    fig, axes = _figure(ncols=len(runs))
    legend: dict[str, Artist] = {}
    for ax, (label, by_round) in zip(axes, runs.items(), strict=True):
        xs = sorted(by_round)
        human = [by_round[r].human or 0.0 for r in xs]
        machine = [by_round[r].machine or 0.0 for r in xs]
        ax.bar(xs, human, 0.6, color="#9ecae1", label="human seeds")
        bars = ax.bar(xs, machine, 0.6, bottom=human, color="#3182bd", label="machine seeds (promoted)")
        # Machine seeds are a thin slice on top of ~175 human ones: write their number on it.
        ax.bar_label(bars, [f"{m:.0f} machine" for m in machine], fontsize=8, padding=2)
        ax.set_ylabel("tasks in the seed pool (count)")
        ax.set_ylim(0, max([1.0] + [h + m for h, m in zip(human, machine, strict=True)]) * 1.15)
        flows = ax.twinx()
        for attr, mark, colour, name in [("promoted", "^", "#2ca02c", "promoted this round (right axis)"),
                                         ("demoted", "v", "#d62728", "demoted this round (right axis)")]:  # fmt: skip
            pts = [(r, getattr(by_round[r], attr)) for r in xs if getattr(by_round[r], attr)]
            flows.plot([r for r, _ in pts], [n for _, n in pts], mark, color=colour, ms=9, label=name)
        flows.set_ylabel("promotions / demotions (count)")
        flows.set_ylim(0, max([1] + [max(p.promoted, p.demoted) for p in by_round.values()]) * 1.25)
        _counts(flows.yaxis)
        _round_axis(ax, set(xs))
        if len(runs) > 1:
            ax.set_title(label, fontsize=10)
        for one in (ax, flows):  # one legend for all panels: a panel may lack promotions or demotions
            legend.update({name: handle for handle, name in zip(*one.get_legend_handles_labels(), strict=True)})
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(title)
    return _png(fig)


def heldout_loss(series: Mapping[str, Mapping[int, float]]) -> bytes:
    """The student's loss on held-out tasks at the end of each round (lower is better)."""
    title = "Held-out loss per round"
    if not has_data(series):
        return _empty(title, "no held-out evaluation recorded")
    fig, (ax,) = _figure()
    _round_lines(ax, series, "held-out loss (mean cross-entropy per token)")
    ax.set_title(title + " (lower is better)")
    return _png(fig)


def diversity(cosine: Mapping[str, Mapping[int, float]], vendi: Mapping[str, Mapping[int, float]]) -> bytes:
    """Diversity of the kept tasks per round: mean pairwise cosine distance and Vendi score, side by side."""
    title = "Diversity of kept tasks per round (higher is more diverse)"
    if not has_data(cosine, vendi):
        return _empty(title, "no diversity metrics recorded")
    fig, (left, right) = _figure(ncols=2)
    _round_lines(left, cosine, "mean pairwise cosine distance (0-2)")
    left.set_title("Mean pairwise cosine distance", fontsize=10)
    _round_lines(right, vendi, "Vendi score (effective number of tasks)")
    right.set_title("Vendi score", fontsize=10)
    fig.suptitle(title)
    return _png(fig)


def rejects_by_rule(counts: Mapping[str, Mapping[str, int]], top: int = 10) -> bytes:
    """Why candidates were rejected: the ``top`` rules by total count, horizontal bars grouped by run."""
    title = f"Rejected candidates by filter rule (top {top})"
    if not has_data(counts):
        return _empty(title, "no candidate rejected")
    totals: dict[str, int] = {}
    for by_rule in counts.values():
        for rule, n in by_rule.items():
            totals[rule] = totals.get(rule, 0) + n
    rules = sorted(totals, key=lambda r: (-totals[r], r))[:top][::-1]  # largest at the top
    fig, (ax,) = _figure()
    height = 0.8 / len(counts)
    for i, (label, by_rule) in enumerate(counts.items()):
        offset = ((len(counts) - 1) / 2 - i) * height
        ys = [y + offset for y in range(len(rules))]
        bars = ax.barh(ys, [by_rule.get(r, 0) for r in rules], height, color=f"C{i}", label=label)
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(range(len(rules)), rules, fontsize=8)
    ax.set_xlabel("rejected candidates (count)")
    _counts(ax.xaxis)
    ax.set_title(title)
    ax.margins(x=0.12)
    _legend(ax, loc="lower right")
    return _png(fig)
