"""What ``sedi status`` prints: the numbers of a run, read from its database without taking its lock.

Works while a run is going on and on a read-only copy (see :mod:`sedi.store.rundir`); a run whose state says
``running`` but whose lock nobody holds was killed, and is reported ``interrupted``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sedi.base.vocabulary import DEMOTE, KEPT, PROMOTE
from sedi.stages.shapes import shape_summary
from sedi.store import ledger
from sedi.store import summary_queries as queries
from sedi.store.rundir import lock_held, read_run_db


def summarize(db: sqlite3.Connection, run_dir: Path) -> dict[str, Any]:
    """The numbers ``sedi status --json`` prints, from a run database."""
    db.row_factory = sqlite3.Row
    calls = queries.call_totals(db)
    verdicts = queries.verdict_counts(db)
    rejected = queries.rejections(db)
    candidates, kept = sum(verdicts.values()), verdicts.get(KEPT, 0)
    meta = queries.meta(db)
    cost = ledger.cost_summary(db, meta)
    tokens = calls.prompt_tokens + calls.completion_tokens
    return {
        "run_dir": str(run_dir),
        "state": meta.get("state", "created"),
        "outcome": meta.get("outcome") or None,  # why the latest start ended (null while running or if killed)
        "calls": calls.calls,
        "failed_calls": calls.failed,
        "refused_attempts": calls.refused,  # no connection: nothing sent, so not in calls
        "truncated_responses": calls.truncated,
        "cache_hits": int(meta.get("cache_hits", 0)),
        "wall_seconds": float(meta.get("wall_seconds", 0)),
        "responses": queries.response_count(db),
        "prompt_tokens": calls.prompt_tokens,
        "completion_tokens": calls.completion_tokens,
        # Prompt tokens the provider served from its prompt cache (usage.prompt_tokens_details.cached_tokens), and
        # their share of all prompt tokens (null before any prompt token was reported).
        "cached_prompt_tokens": calls.cached_prompt_tokens,
        "cached_share": round(calls.cached_prompt_tokens / calls.prompt_tokens, 4) if calls.prompt_tokens else None,
        "budget_charged_tokens": calls.charged_tokens,
        # cost_usd and budget_charged_cost_usd at the latest start's prices; null when none were given. cost_usd is
        # never below the charge: with cost_upper_bound true (cost_known false) it is "at most", as is usd_per_kept.
        **cost,
        "candidates": candidates,
        "kept": kept,
        "keep_rate": round(kept / candidates, 4) if candidates else None,
        "calls_per_kept": round(calls.calls / kept, 4) if kept else None,
        # What each kept task cost: prompt + completion tokens, and USD at the latest start's prices (null when
        # nothing is kept yet, or when no prices were given: an unknown cost is never reported as $0).
        "tokens_per_kept": round(tokens / kept, 2) if kept else None,
        "usd_per_kept": round(cost["cost_usd"] / kept, 8) if kept and cost["cost_usd"] is not None else None,
        "verdicts": verdicts,
        "rejected_by_rule": rejected,
        "embedding_rejects": rejected.get("embedding", 0),
        # Per request shape (generation.shaping): its generation requests, kept tasks, kept per call (and per USD when
        # priced), and the shape with the best posterior kept per dollar (per call without prices); see stages.shapes.
        **shape_summary(db, bool(cost["cost_known"])),
        **_repair_summary(db),
        **_training_summary(db),
    }


def _repair_summary(db: sqlite3.Connection) -> dict[str, int]:
    """generation.repair: ledger calls of repair requests (also in ``calls``) and kept tasks whose output came from
    repair (0 in a file written before the original_output column existed, read without migrating it)."""
    repairs = queries.repair_counts(db)
    return {"repair_calls": repairs.calls, "repaired_kept": repairs.kept}


def _training_summary(db: sqlite3.Connection) -> dict[str, Any]:
    # Each metric's latest value: a round cut short by the budget measures diversity but trains nothing,
    # so its held-out loss is that of the round before.
    metrics = queries.latest_metrics(db)
    history = queries.seed_moves(db)
    return {
        "rounds": queries.rounds_done(db),
        "train_steps": queries.train_step_count(db),
        "promotions": history.get(PROMOTE, 0),
        "demotions": history.get(DEMOTE, 0),
        "seed_pool_size": queries.active_seed_count(db),
        "diversity": {
            name: round(float(metrics[name]), 4)
            for name in ("diversity_mean_cosine_distance", "diversity_vendi", "topics_covered")
            if metrics.get(name) is not None
        },
        **{
            name: None if metrics.get(name) is None else round(float(metrics[name]), 4)
            for name in ("heldout_loss", "heldout_rouge_l")
        },
    }


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Summary of a run directory without taking its lock (works while a run is going on)."""
    summary = read_run_db(run_dir, lambda db: summarize(db, run_dir))
    if summary["state"] == "running" and not lock_held(run_dir):
        summary["state"] = "interrupted"  # killed (SIGKILL, power cut): nobody owns the directory any more
    return summary
