"""The report's plots: each takes plain data (one entry per run, keyed by its label) and returns PNG bytes.

Rounds are passed as the store keeps them (0-based) and shown from 1, as ``sedi run`` prints them.

Plots never see a database, so they can be tested on hand-made numbers and reused by other front ends.
Every plot puts all runs on one figure with the same colour per run (``colour(i)``, by the order of the
mapping; the page marks each run with it too), legends under the axes, never on the data. Missing data is
normal (a run still generating has no training yet): such a plot is a short strip saying what would appear.

matplotlib is imported inside the functions: importing it costs about a second, which the CLI should not
pay for commands that draw nothing. Figures are built with the object API (no pyplot), so nothing touches
global backend state or leaks figures.
"""

from __future__ import annotations

import io
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence, Sized
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

FIGSIZE = (7.0, 4.0)  # inches; at DPI 130 a 910-pixel-wide image, the width of the report's column
DPI = 130
NO_DATA = "nothing to plot yet"
ATTRACTIVE_LABEL = "attractive batch (promoted)"
# One colour per run, in order (matplotlib's tab10 without its green and red, which mean promoted / demoted).
RUN_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
HUMAN, MACHINE, PROMOTED, DEMOTED = "#c6c6c6", "#525252", "#2ca02c", "#d62728"


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


def colour(i: int) -> str:
    """The colour of the ``i``-th run in every plot (and on the page)."""
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def _figure(ncols: int = 1, nrows: int = 1, height: float = FIGSIZE[1], **kw: Any) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGSIZE[0], height), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty(title: str, what: str) -> bytes:
    """A short grey strip that says plainly there is nothing to plot yet, and what would appear: not an error."""
    fig, (ax,) = _figure(height=1.2)
    fig.set_facecolor("#f7f7f7")
    ax.set_axis_off()
    ax.set_title(title, color="0.35")
    ax.text(0.5, 0.4, f"{NO_DATA}: {what}", ha="center", va="center", fontsize=11, color="0.4", style="italic")
    return _png(fig)


def _style(i: int) -> dict[str, Any]:
    """A run's look in every plot: its colour, marker and dash; later runs' markers are smaller, so both show."""
    return {"color": colour(i), "marker": "os^Dv"[i % 5], "markersize": [9.0, 6.0, 4.0][i % 3],
            "linestyle": ["-", "--", ":", "-."][i % 4]}  # fmt: skip


def _counts(*axes: Axis) -> None:
    """Counts are whole numbers: no 0.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def _legend(fig: Figure, *axes: Axes, extra: Mapping[str, Artist] | None = None, minimum: int = 2) -> None:
    """One legend for the whole figure, under the axes so it never hides data; only when it tells something
    (at least ``minimum`` labelled artists). A label repeated across panels is listed once."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(name, handle)
    entries.update(extra or {})
    if len(entries) >= minimum:
        ncols = len(entries) if sum(len(name) for name in entries) < 70 else 2
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=ncols, fontsize=9,
                   frameon=False)  # fmt: skip


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


def calls_vs_kept(curves: Mapping[str, Sequence[int]]) -> bytes:
    """Cumulative kept tasks after each teacher call (``curve[i]`` = kept after call ``i + 1``)."""
    title = "Kept tasks vs teacher calls (cumulative)"
    if not has_data(curves):
        return _empty(title, "no teacher calls recorded")
    fig, (ax,) = _figure()
    for i, (label, curve) in enumerate(curves.items()):
        total = f": {curve[-1]} kept in {len(curve)} calls" if curve else ""  # the legend says where each line ends
        # One point per call: markers would clutter.
        ax.step(range(len(curve) + 1), [0, *curve], where="post", label=label + total, **{**_style(i), "marker": None})
        if curve:  # the last call's step would otherwise end on the frame, unseen
            ax.plot([len(curve)], [curve[-1]], "o", color=colour(i), ms=5)
    ax.set_title(title)
    ax.set_xlabel("teacher calls (cumulative, count)")
    ax.set_ylabel("kept tasks (cumulative, count)")
    top = max(curve[-1] if curve else 0 for curve in curves.values())
    if top == 0:  # a flat line on the axis is easy to miss: say it
        ax.text(0.5, 0.5, "no task kept yet", transform=ax.transAxes, ha="center", fontsize=12, color="0.35")
    ax.set_xlim(0, max(len(c) for c in curves.values()) * 1.04 + 0.5)
    ax.set_ylim(0, max(top, 1) * 1.1)
    _counts(ax.xaxis, ax.yaxis)
    ax.grid(alpha=0.3)
    _legend(fig, ax, minimum=1)
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
        bars = ax.bar([x + offset for x in xs], [100 * by_round[x] for x in xs], width, color=colour(i), label=label)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=9, padding=2)
    _round_axis(ax, rounds)
    ax.set_title(title)
    ax.set_ylabel("candidates kept (%)")
    ax.set_ylim(0, 112)  # room for a label over a 100% bar; no tick beyond 100%
    ax.set_yticks(range(0, 101, 20))
    _legend(fig, ax)
    return _png(fig)


def grad_norms(runs: Mapping[str, Sequence[StepPoint]]) -> bytes:
    """Gradient norm per optimizer step; attractive (promoting) steps marked; rounds split by faint lines."""
    from matplotlib.lines import Line2D

    title = "Student gradient norm per training step"
    if not has_data(runs):
        return _empty(title, "no training steps recorded")
    fig, (ax,) = _figure()
    marked, lines = False, dict[float, int]()  # x of each dashed line -> the round that starts there
    for i, (label, steps) in enumerate(runs.items()):
        pts = sorted(steps, key=lambda p: p.step)
        if not pts:
            continue
        ax.plot([p.step for p in pts], [p.grad_norm for p in pts], lw=1.2, label=label, **{**_style(i), "marker": None})
        if hot := [p for p in pts if p.attractive]:
            ax.scatter([p.step for p in hot], [p.grad_norm for p in hot], marker="*", s=160, color=colour(i),
                       edgecolors="black", linewidths=0.7, zorder=3)  # fmt: skip
            marked = True
        for prev, cur in pairwise(pts):
            if cur.round != prev.round and (x := (prev.step + cur.step) / 2) not in lines:
                lines[x] = cur.round
                ax.axvline(x, color="0.55", lw=0.9, ls="--", alpha=0.6)
    first = min((p for steps in runs.values() for p in steps), key=lambda p: p.step).round  # labelled at the left
    for x, r in {ax.get_xlim()[0]: first, **lines}.items():  # above the frame, out of the layout (no squeezing)
        ax.annotate(f"round {r + 1}", (x, 1), xycoords=("data", "axes fraction"), xytext=(3, 2),
                    textcoords="offset points", fontsize=9, color="0.4", va="bottom").set_in_layout(False)  # fmt: skip
    ax.set_title(title + ("" if marked else " (no attractive batch yet)"), pad=16)
    ax.set_xlabel("optimizer step (global across rounds; dashed lines = new round)")
    ax.set_ylabel("gradient norm (L2)")
    ax.grid(alpha=0.3)
    _counts(ax.xaxis)
    # One legend entry for the stars of every run: each star has its run's colour.
    one = len(runs) == 1
    star = Line2D([], [], ls="none", marker="*", ms=13, mec="black", mew=0.7, color=colour(0) if one else "0.75")
    _legend(fig, ax, extra={ATTRACTIVE_LABEL + ("" if one else ", in its run's colour"): star} if marked else None)
    return _png(fig)


def seed_pool(runs: Mapping[str, Mapping[int, PoolRound]]) -> bytes:
    """Per run, the pool's size per round (human and machine stacked) over the tasks promoted and demoted."""
    title = "Seed pool over rounds"
    if not has_data(runs):
        return _empty(title, "no seed-pool metrics recorded")
    fig, axes = _figure(len(runs), 2, height=5.2, sharex="col", sharey="row", gridspec_kw={"height_ratios": [3, 2]})
    size = max([1.0] + [(p.human or 0.0) + (p.machine or 0.0) for pool in runs.values() for p in pool.values()])
    moved = max([1] + [max(p.promoted, p.demoted) for pool in runs.values() for p in pool.values()])
    for col, (label, by_round) in enumerate(runs.items()):
        top, bottom = axes[col], axes[len(runs) + col]
        xs = sorted(by_round)
        human = [by_round[r].human or 0.0 for r in xs]
        machine = [by_round[r].machine or 0.0 for r in xs]
        top.bar(xs, human, 0.6, color=HUMAN, label="human seeds (in the pool)")
        bars = top.bar(xs, machine, 0.6, bottom=human, color=MACHINE, label="machine seeds (in the pool)")
        # Machine seeds are a thin slice on top of ~175 human ones: write their number on it; narrow panels (several
        # runs or many rounds) get a shorter two-line label in a smaller font, so neighbouring labels never touch.
        narrow = len(runs) * max(len(xs), 1) > 8
        texts = [f"{h + m:.0f}\n({m:.0f})" if narrow else f"{h + m:.0f} ({m:.0f} machine)"
                 for h, m in zip(human, machine, strict=True)]  # fmt: skip
        top.bar_label(bars, texts, fontsize=8 if narrow else 9, padding=2)
        for shift, attr, tint in [(-0.15, "promoted", PROMOTED), (0.15, "demoted", DEMOTED)]:
            flow = bottom.bar([x + shift for x in xs], [getattr(by_round[r], attr) for r in xs], 0.3, color=tint,
                              label=f"{attr} this round")  # fmt: skip
            bottom.bar_label(flow, fontsize=9, padding=2)
        _round_axis(bottom, set(xs))
        if len(runs) > 1:  # long labels wrap, so narrow panels' titles do not run into each other
            top.set_title(textwrap.fill(label, 66 // len(runs)), fontsize=10, color=colour(col))
        if not xs:
            top.text(0.5, 0.5, NO_DATA, transform=top.transAxes, ha="center", color="0.4", style="italic")
    axes[0].set_ylim(0, size * (1.18 if len(runs) * max(len(p) for p in runs.values()) <= 8 else 1.4))
    axes[0].set_ylabel("seeds in pool (count)")
    axes[len(runs)].set_ylim(0, moved * 1.35)
    axes[len(runs)].set_ylabel("tasks moved (count)")
    _counts(axes[len(runs)].yaxis)
    _legend(fig, *axes)
    fig.suptitle(title)
    return _png(fig)


def heldout_loss(
    series: Mapping[str, Mapping[int, float]],
    calls: Mapping[str, Mapping[int, float]] | None = None,
    usd: Mapping[str, Mapping[int, float]] | None = None,
) -> bytes:
    """The student's held-out loss after each evaluated round (lower is better) against what the run had paid
    by then: cumulative USD when every run has prices, else cumulative teacher calls, else the round. This is
    the curve ``run.stop_when`` judges: where it flattens, more data stopped paying for itself."""
    title = "Held-out loss against teacher cost"
    if not has_data(series):
        return _empty(title, "no held-out evaluation recorded")
    fig, (ax,) = _figure()
    with_data = [label for label, by_round in series.items() if by_round]
    if usd and all(usd.get(label) for label in with_data):
        cost, xlabel = usd, "teacher cost, cumulative (USD)"
    elif calls and all(calls.get(label) for label in with_data):
        cost, xlabel = calls, "teacher calls, cumulative (count)"
    else:
        _round_lines(ax, series, "held-out loss\n(mean cross-entropy per token)")
        ax.set_title("Held-out loss per round (lower is better)")
        _legend(fig, ax)
        return _png(fig)
    for i, (label, by_round) in enumerate(series.items()):
        rounds = [r for r in sorted(by_round) if r in cost.get(label, {})]
        ax.plot([cost[label][r] for r in rounds], [by_round[r] for r in rounds], label=label, **_style(i))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out loss\n(mean cross-entropy per token)")
    ax.grid(alpha=0.3)
    ax.set_title(title + " (lower is better)")
    _legend(fig, ax)
    return _png(fig)


def diversity(cosine: Mapping[str, Mapping[int, float]], vendi: Mapping[str, Mapping[int, float]]) -> bytes:
    """Diversity of the kept tasks per round: mean pairwise cosine distance and Vendi score, side by side."""
    title = "Diversity of kept tasks per round (higher is more diverse)"
    if not has_data(cosine, vendi):
        return _empty(title, "no diversity metrics recorded")
    fig, (left, right) = _figure(ncols=2)
    _round_lines(left, cosine, "distance (0 = identical, 1 = unrelated)")
    left.set_title("Mean pairwise cosine distance", fontsize=10)
    _round_lines(right, vendi, "effective number of distinct tasks")
    right.set_title("Vendi score", fontsize=10)
    fig.suptitle(title)
    _legend(fig, left, right)
    return _png(fig)


def rejects_by_rule(counts: Mapping[str, Mapping[str, int]], top: int = 10) -> bytes:
    """Why candidates were rejected: the ``top`` rules by total count, horizontal bars grouped by run."""
    title = "Rejected candidates by filter rule"
    if not has_data(counts):
        return _empty(title, "no candidate rejected")
    totals: Counter[str] = sum((Counter(by_rule) for by_rule in counts.values()), Counter())
    rules = sorted(totals, key=lambda r: (-totals[r], r))[:top][::-1]  # largest at the top
    fig, (ax,) = _figure(height=max(FIGSIZE[1], 1.4 + 0.22 * len(rules) * len(counts)))
    height = 0.8 / len(counts)
    for i, (label, by_rule) in enumerate(counts.items()):
        offset = ((len(counts) - 1) / 2 - i) * height
        ys = [y + offset for y in range(len(rules))]
        values = [by_rule.get(r, 0) for r in rules]
        bars = ax.barh(ys, values, height, color=colour(i), label=label)
        ax.bar_label(bars, [str(n) if n else "" for n in values], fontsize=9, padding=2)  # no bar: none rejected
    ax.set_yticks(range(len(rules)), rules, fontsize=9)
    ax.set_xlabel("rejected candidates (count)")
    _counts(ax.xaxis)
    ax.set_title(title + (f" (the {top} most frequent of {len(totals)})" if len(totals) > top else ""))
    ax.margins(x=0.12)
    _legend(fig, ax)
    return _png(fig)
