"""The report's feedback section: per round, what the closed loop decided, and the choices in force.

One table per ``method: sedi`` run: optimizer steps, attractive windows decided, promotions and demotions, the
pool's size, and how the prompts were drawn (the share of in-context slots given to the best-looking tenth of the
pool's seeds, and how many seed topics the round's prompts showed). A line above it names the choices in
force, read from the run's recorded config, so a reader never has to guess which reading of the method ran.
"""

from __future__ import annotations

import html
import sqlite3
from typing import Any

import yaml

from sedi.store.report_queries import feedback_rounds

_PER_ROUND = (
    ("train_steps", "optimizer steps"),
    ("attractive_windows", "attractive windows"),
    ("promoted", "promoted"),
    ("demoted", "demoted"),
    ("seed_pool_size", "seed pool"),
    ("prompt_top10_share", "prompt slots to the top 10% of seeds"),
    ("prompt_topics", "seed topics shown"),
)
_METRICS = ("attractive_windows", "seed_pool_size", "prompt_top10_share", "prompt_topics")  # round_metrics names


def choices(config_body: str | None) -> str | None:
    """The method's open choices in force, in words (None for runs that are not ``method: sedi``)."""
    try:
        config = yaml.safe_load(config_body) if config_body else None
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict) or config.get("method") != "sedi":
        return None
    fb: dict[str, Any] = config.get("feedback") or {}
    demote = (
        f"each window the weakest {fb.get('demote_per_cycle')} seed(s) by offspring training signal leave "
        f"(at least {fb.get('min_evidence')} offspring, below the pool's mean)"
        if fb.get("demote") == "offspring_signal"
        else "seeds leave only above the pool cap"
    )
    bandit = fb.get("bandit") or {}
    drawn = (
        f"by a Thompson-sampling bandit over offspring keep rates ({bandit.get('explore', 0):.0%} of slots "
        f"uniform, one seed per topic: {bandit.get('one_per_topic')})"
        if fb.get("steer")
        else "uniformly"
    )
    source = "the whole pool" if fb.get("in_context") == "pool" else "the 6 human + 2 machine split"
    return (
        f"Feedback: windows of {fb.get('interval')} optimizer steps over the whole run (signal {fb.get('selector')}, "
        f"promote {fb.get('promote')}); {demote}; human seeds protected: {fb.get('protect_human')}; pool cap "
        f"{fb.get('max_pool_size')}. Prompts draw their tasks from {source}, {drawn}."
    )


def per_round(db: sqlite3.Connection) -> dict[int, dict[str, float]]:
    """Round -> the numbers of :data:`_PER_ROUND` that the run recorded."""
    out: dict[int, dict[str, float]] = {}
    for r, name, value in feedback_rounds(db, _METRICS):
        out.setdefault(r, {})[name] = value
    return out


def section(label: str, choice_text: str | None, rounds: dict[int, dict[str, float]]) -> str:
    """The HTML of one run's feedback table ("" when the run has no feedback)."""
    if choice_text is None or not rounds:
        return ""

    def cell(key: str, values: dict[str, float]) -> str:
        value = values.get(key)
        if value is None:
            return "–"
        return f"{value:.0%}" if key == "prompt_top10_share" else f"{value:,.0f}"

    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in _PER_ROUND)
    body = "".join(
        f"<tr><th scope='row'>round {r + 1}</th>" + "".join(f"<td>{cell(k, v)}</td>" for k, _ in _PER_ROUND) + "</tr>"
        for r, v in sorted(rounds.items())
    )
    return (
        f"<h3>{label}</h3><p>{html.escape(choice_text)}</p>"
        f'<table class="feedback"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )
