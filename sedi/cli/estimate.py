"""``sedi estimate``: what the run as configured will cost, before the money is spent, and what reaching
``generation.target_kept`` would.

The headline numbers (``calls``, ``cost_usd``, ...) are the run as configured: the forecast to the target, cut at the
first cap that ends the run sooner (``run.max_rounds``; ``budget.max_calls``; ``budget.max_tokens`` and
``max_cost_usd`` at the per-call means seen), named in ``ends_by``. The forecast to the target is beside them
(``calls_to_target``, ...), and ``stops_early`` says which caps to raise to get there.

Three bases, from the most evidence to the least:

- ``pilot`` (``--pilot-calls N``): first N real calls through the normal run path (:func:`sedi.loop.run` with
  ``budget.max_calls`` at the calls already made plus N), so they sit in the run's ledger and response cache and
  ``sedi run`` on the same directory later replays them for nothing (a resumed run may raise the budget); then the
  forecast is made as for ``run``.
- ``run``: a run directory that has answered generation calls; the forecast continues it from what it has seen.
- ``bounds``: nothing seen. Without a keep rate there is no point estimate of the calls (``calls`` is null);
  what the config alone bounds is given: the fewest calls that could reach the target (every call writes the
  most tasks it can and all are kept) and the most one generation call can use (the budget's own reservation:
  the prompt's byte bound plus the request's max_tokens: ``sampling.max_tokens``, or with ``generation.shaping:
  learn`` the largest of the shapes').

The forecast (``run`` and ``pilot``): the generation calls so far ("slots") kept k tasks in s slots; the slots
still needed for the R = target - kept tasks left, with a 95% interval, come from
:func:`sedi.report.stats.calls_to_keep`
(Poisson counts: the log of R*s/k has a standard error of sqrt(1/k + 1/R), the uncertainty of the rate seen plus
the chance in the tasks to come). A run checks the target between rounds, so slots are rounded up to whole rounds
of ``generation.calls_per_round``; calls are slots times the calls per slot seen (1 for the alpaca style without
failures; more with retries and failed attempts, or the classification and instance calls of the self-instruct
style). Tokens, USD (at ``teacher.prices``; null when unknown, never 0) and wall seconds are what was spent plus the
per-call means seen times the calls left; their interval ends follow the calls' ends.

What it assumes: a constant yield per call. Runs tend to keep fewer tasks as the pool fills (more ROUGE-L and
embedding duplicates), so a forecast from a short pilot leans optimistic for long runs: estimate again as the run
goes (basis ``run``). Seconds are the run's timed round parts (generation, filters, training, evaluation); a pilot
shorter than a round has trained nothing, and calls decoded in parallel make a short pilot look slow per call.
"""

from __future__ import annotations

import math
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedi.base.vocabulary import ProgressHook
from sedi.config.model import SediConfig
from sedi.config.seeds import Task
from sedi.loop import check_inputs, run
from sedi.report import stats
from sedi.report.summary import read_summary
from sedi.stages.prompts import chat_messages, completion_prompt
from sedi.stages.shapes import possible_shapes, shown_tasks
from sedi.store import ledger
from sedi.store.report_queries import answered_generation_requests, timed_seconds
from sedi.store.rundir import DB_NAME, connect_readonly, lock_held, unreadable
from sedi.teacher.budget import prompt_token_bound

# A kept task costs at least this many completion tokens (an instruction of 4 words or more: 3 or fewer are
# rejected as too short; its labels; an output): it bounds the tasks one completion-mode call can write.
MIN_TOKENS_PER_TASK = 8
PROMPT_DRAWS = 200  # prompts drawn from the seeds to bound the prompt tokens of one generation call
INTERVAL = "95%: Poisson counts of kept tasks (sedi.report.stats.calls_to_keep), rounded up to whole rounds"


@dataclass(frozen=True)
class Seen:
    """What a run directory has seen so far."""

    calls: int = 0  # ledger rows: every attempt, failed ones and retries included
    slots: int = 0  # generation requests answered
    kept: int = 0
    candidates: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    timed: tuple[str, ...] = ()  # the round parts whose seconds were measured (generate, filter, train, ...)
    # What the budget charged (sedi status's cost_usd): above the reported tokens' cost when some call's usage was
    # not reported and was charged its worst case; the spent cost is never shown below it.
    charged_usd: float = 0.0
    cost_upper_bound: bool = False


def read_seen(run_dir: Path) -> Seen | None:
    """What the run in ``run_dir`` has seen, read-only (works while it runs); None without a run there."""
    db_path = run_dir / DB_NAME
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return None
    summary = read_summary(run_dir)
    try:
        db = connect_readonly(db_path)
        try:
            slots = answered_generation_requests(db)
            timed = timed_seconds(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None
    return Seen(
        summary["calls"], int(slots), summary["kept"], summary["candidates"], summary["prompt_tokens"],
        summary["completion_tokens"], float(sum(timed.values())) or float(summary["wall_seconds"]),
        tuple(sorted(name.removeprefix("seconds_") for name in timed)),
        float(summary.get("cost_usd") or 0.0), bool(summary.get("cost_upper_bound")),
    )  # fmt: skip


Prices = tuple[float, float] | None  # USD per prompt and per completion token


def _prices(config: SediConfig) -> Prices:
    """USD per prompt and per completion token (less teacher.prices.batch_api_discount with teacher.batch_api);
    (0, 0) for a free teacher; None when unknown."""
    prices = config.teacher.prices
    if prices is not None:
        share = 1.0 - prices.batch_api_discount if config.teacher.batch_api else 1.0
        return prices.prompt * share / 1e6, prices.completion * share / 1e6
    return None if ledger.pricing_label(config.teacher) == ledger.PRICES_NONE else (0.0, 0.0)


def prompt_bounds(config: SediConfig, seeds: list[Task]) -> tuple[int, int]:
    """(mean, max) of the budget's prompt-token bound over generation prompts drawn from the seeds, each showing
    as many tasks as a prompt of its shape does (generation.human_in_context + machine_in_context, or a learned
    shape's in_context of at most its max_task_chars); the shapes take turns."""
    gen, chat = config.generation, config.teacher.mode == "chat"
    shapes, rng = possible_shapes(config), random.Random(config.run.seed)
    bounds = []
    for draw in range(PROMPT_DRAWS):
        shape = shapes[draw % len(shapes)]
        short = shown_tasks(seeds, shape)
        examples = rng.sample(short, min(len(short), shape.in_context))
        if chat:
            texts = [text for _, text in chat_messages(examples, shape.tasks_per_call, gen.prompt_style)]
        else:
            texts = [completion_prompt(examples, gen.prompt_style)]
        bounds.append(prompt_token_bound(texts))
    return round(sum(bounds) / len(bounds)), max(bounds)


def _most_tasks_per_call(config: SediConfig) -> int:
    shapes = possible_shapes(config)
    if config.teacher.mode == "chat":
        return max(s.tasks_per_call for s in shapes)
    return max(1, max(s.max_tokens for s in shapes) // MIN_TOKENS_PER_TASK)


def forecast(config: SediConfig, seen: Seen | None, seeds: list[Task], basis: str) -> dict[str, Any]:
    """The estimate's numbers (see the module docstring); ``basis`` ("pilot" or "run") becomes "bounds" when
    ``seen`` has no answered generation call."""
    s, gen = seen or Seen(), config.generation
    left = max(gen.target_kept - s.kept, 0)
    basis = basis if s.slots else "bounds"
    slots: tuple[float | None, float, float | None]  # more generation calls needed: point, low, high
    if basis == "bounds":  # every call writes the most tasks it can, all kept; self-instruct style: + instance calls
        slots, per_slot = (None, left / _most_tasks_per_call(config), None), 1.0
        extra = left * (1 + config.instances.classify) if gen.prompt_style == "self-instruct" else 0
    else:
        slots, per_slot, extra = stats.calls_to_keep(s.slots, s.kept, left), s.calls / s.slots, 0
    # The target is checked between rounds: generation calls come in whole rounds.
    rounds = [None if x is None else gen.calls_per_round * math.ceil((s.slots + x) / gen.calls_per_round - 1e-9)
              if left else s.slots for x in slots]  # fmt: skip
    calls = [None if r is None else s.calls + math.ceil((r - s.slots) * per_slot + extra - 1e-9) for r in rounds]
    mean_prompt, max_prompt = prompt_bounds(config, seeds)
    worst = (max_prompt, max(s.max_tokens for s in possible_shapes(config)))
    price, seen_basis = _prices(config), basis != "bounds"
    spent = (s.prompt_tokens, s.completion_tokens, s.seconds)
    rate, spread = s.kept / max(s.calls, 1), stats.Z95 / math.sqrt(max(s.kept, 1))
    out: dict[str, Any] = {
        "basis": basis, "target_kept": gen.target_kept, "kept": s.kept, "candidates": s.candidates,
        "calls_spent": s.calls,
        "keep_rate": round(s.kept / s.candidates, 4) if seen_basis and s.candidates else None,  # as sedi status
        "kept_per_call": round(rate, 4) if seen_basis else None,
        "kept_per_call_low": (round(rate * math.exp(-spread), 4) if s.kept else 0.0) if seen_basis else None,
        "kept_per_call_high": round(rate * math.exp(spread) if s.kept else 3.0 / s.calls, 4) if seen_basis else None,
        "interval": INTERVAL if seen_basis else "bounds: the fewest calls; no upper end without a keep rate",
        "prompt_tokens_per_call": round(s.prompt_tokens / s.calls, 1) if seen_basis else None,
        "completion_tokens_per_call": round(s.completion_tokens / s.calls, 1) if seen_basis else None,
        # What the budget reserves for one generation call: the prompt's byte bound plus the request's max_tokens.
        "prompt_tokens_per_call_high": max_prompt, "prompt_tokens_per_call_bound_mean": mean_prompt,
        "completion_tokens_per_call_high": worst[1],
        "cost_known": price is not None,
        "cost_usd_spent": None if price is None else round(_spent_usd(s, price), 6),
        "cost_spent_upper_bound": s.cost_upper_bound,  # then cost_usd_spent is "at most"
        "cost_usd_per_call_high": None if price is None else round(worst[0] * price[0] + worst[1] * price[1], 6),
        "seconds_spent": round(s.seconds, 1),
        "seconds_parts": list(s.timed),  # without "train", the seconds leave training out (no round trained yet)
    }  # fmt: skip
    # The headline numbers are the run as configured: the calls to the target, cut at the first cap that ends the
    # run sooner (run.max_rounds, or a budget cap at the per-call means seen); the target's own are "_to_target".
    caps = _call_caps(config, s, per_slot + extra / max((rounds[0] or rounds[1] or 0) - s.slots, 1), price)
    cut = min((n for _, n in caps), default=None)
    configured = [n if n is None or cut is None else min(n, cut) for n in calls]
    for label, ends in (("", configured), ("_to_target", calls)):
        for end, n in zip(("", "_low", "_high"), ends, strict=True):
            # Spent plus the per-call means seen times the calls left; nothing to go on for bounds.
            p, c, sec = (None if n is None or not seen_basis else spent[i] + spent[i] / s.calls * (n - s.calls)
                         for i in range(3))  # fmt: skip
            out["calls" + label + end] = n
            out["prompt_tokens" + label + end] = None if p is None else round(p)
            out["completion_tokens" + label + end] = None if c is None else round(c)
            cost = None if price is None or p is None or c is None else round(p * price[0] + c * price[1], 6)
            out["cost_usd" + label + end] = 0.0 if price == (0.0, 0.0) else cost  # a free teacher: $0 whatever
            out["seconds" + label + end] = None if sec is None else round(sec, 1)
    point = calls[0] if calls[0] is not None else calls[1]
    first = min(caps, key=lambda cap: cap[1]) if caps else None
    cut_first = first is not None and point is not None and first[1] < point
    out["ends_by"] = first[0] if first is not None and cut_first else "generation.target_kept"
    kept = None if not seen_basis or configured[0] is None else s.kept + rate * (configured[0] - s.calls)
    out["kept_forecast"] = None if kept is None else min(gen.target_kept, math.floor(kept))
    out["stops_early"] = _stops_early(config, out, rounds[0] if rounds[0] is not None else rounds[1])
    return out


def _spent_usd(s: Seen, price: tuple[float, float]) -> float:
    """USD spent so far: the reported tokens at ``price``, or what the budget charged where that is more."""
    return max(s.prompt_tokens * price[0] + s.completion_tokens * price[1], s.charged_usd)


def _call_caps(config: SediConfig, s: Seen, per_slot: float, price: Prices) -> list[tuple[str, int]]:
    """The calls at which each cap would end the run: run.max_rounds (its generation calls times the calls per
    generation call), budget.max_calls, and budget.max_tokens / max_cost_usd at the per-call means seen (the
    budget's worst-case reservation can end a run up to one call sooner)."""
    most = config.run.max_rounds * config.generation.calls_per_round
    budget, used = config.budget, s.prompt_tokens + s.completion_tokens
    caps = [("run.max_rounds", s.calls + math.ceil(max(most - s.slots, 0) * per_slot - 1e-9))]
    if budget.max_calls is not None:
        caps.append(("budget.max_calls", max(budget.max_calls, s.calls)))
    spent = 0.0 if price is None else _spent_usd(s, price)
    for name, cap, so_far in (("budget.max_tokens", budget.max_tokens, used), ("budget.max_cost_usd",
                              budget.max_cost_usd, spent)):  # fmt: skip
        if cap is not None and so_far > 0:  # the calls left at the mean per call seen so far
            caps.append((name, s.calls + max(math.floor((cap - so_far) / (so_far / s.calls)), 0)))
    return caps


def _stops_early(config: SediConfig, out: dict[str, Any], slots: int | None) -> list[str]:
    """The caps that end the run before the target at the forecast (for bounds: even at the fewest calls)."""
    calls = out["calls_to_target"] if out["calls_to_target"] is not None else out["calls_to_target_low"]
    most, budget, notes = config.run.max_rounds * config.generation.calls_per_round, config.budget, []
    if slots is not None and slots > most:
        notes.append(f"run.max_rounds ({config.run.max_rounds}) ends the run after {most} generation calls")
    tokens = None if out["prompt_tokens_to_target"] is None else out["prompt_tokens_to_target"] + out[
        "completion_tokens_to_target"]  # fmt: skip
    for name, cap, value in (("max_calls", budget.max_calls, calls), ("max_cost_usd", budget.max_cost_usd,
                             out["cost_usd_to_target"]), ("max_tokens", budget.max_tokens, tokens)):  # fmt: skip
        if cap is not None and value is not None and value > cap:
            notes.append(f"budget.{name} ({cap}) ends the run first")
    return [f"{note}: raise it to reach generation.target_kept" for note in notes]


def _with_max_calls(config: SediConfig, max_calls: int) -> SediConfig:
    data = config.model_dump(mode="json")
    data["budget"]["max_calls"] = max_calls
    return SediConfig.model_validate(data)


def estimate(
    config: SediConfig, run_dir: Path, source: str, pilot_calls: int = 0, progress: ProgressHook | None = None
) -> dict[str, Any]:
    """Check the inputs as ``sedi run`` does (one-line errors before anything is spent), run the pilot if asked
    (``pilot_calls`` more calls in ``run_dir``, never beyond the config's own budget), and forecast."""
    watching = not pilot_calls and run_dir.is_dir() and lock_held(run_dir)  # a run going on: read it, not resume
    (seeds, _), _ = check_inputs(config, source, None if watching else run_dir)
    before = read_seen(run_dir)
    made = 0
    if pilot_calls:
        cap = (before.calls if before else 0) + pilot_calls
        cap = cap if config.budget.max_calls is None else min(cap, config.budget.max_calls)
        run(_with_max_calls(config, cap), run_dir, source, progress)
        made = (read_seen(run_dir) or Seen()).calls - (before.calls if before else 0)
    seen = read_seen(run_dir)
    result = forecast(config, seen, seeds, "pilot" if pilot_calls else "run")
    result.update(run_dir=str(run_dir), pilot_calls=made)
    return result


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:,.4f}"


def _time(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f} s" if value < 120 else f"{value / 60:,.1f} min" if value < 7200 else f"{value / 3600:,.1f} h"


def describe(r: dict[str, Any]) -> str:
    """The estimate in words, one fact per line."""
    target = f"generation.target_kept {r['target_kept']}"
    if r["basis"] == "bounds":
        lines = ["basis: bounds (no generation call seen, so the keep rate is unknown: --pilot-calls N measures it)"]
        lines.append(
            f"calls to reach {target}: unknown without a keep rate (no point estimate); at least "
            f"{r['calls_to_target_low']}"
        )
        if r["ends_by"] != "generation.target_kept":
            lines.append(f"the run as configured: at most {r['calls_low']} calls, ended by {r['ends_by']}")
        lines.append(
            f"one generation call: at most {r['prompt_tokens_per_call_high']:,} prompt + "
            f"{r['completion_tokens_per_call_high']:,} completion tokens"
            + (f", at most {_usd(r['cost_usd_per_call_high'])}" if r["cost_known"] else "")
        )
    else:
        where = f"a pilot of {r['pilot_calls']} calls" if r["basis"] == "pilot" else "the run so far"
        lines = [f"basis: {r['basis']} ({where} in {r['run_dir']}: {r['kept']} of {r['candidates']} candidates kept "
                 f"in {r['calls_spent']} calls)"]  # fmt: skip
        if r["calls"] is None:
            lines.append(f"calls to reach {target}: unknown (nothing kept yet); at least {r['calls_to_target_low']}")
        else:
            kept = f", about {r['kept_forecast']} tasks kept" if r["kept_forecast"] is not None else ""
            lines.append(
                f"the run as configured: {r['calls']} calls (95% interval {r['calls_low']} to {r['calls_high']}), "
                f"{r['calls_spent']} of them made; it ends by {r['ends_by']}{kept}"
            )
            lines.append(
                f"calls to reach {target}: {r['calls_to_target']} (95% interval {r['calls_to_target_low']} to "
                f"{r['calls_to_target_high']})"
            )
            lines.append(
                f"tokens: {r['prompt_tokens']:,} prompt + {r['completion_tokens']:,} completion "
                f"({r['prompt_tokens_per_call']:,.0f} + {r['completion_tokens_per_call']:,.0f} per call)"
            )
        if r["kept_per_call"] is not None:
            lines.append(
                f"keep rate: {r['kept_per_call']:.2f} kept tasks per call (95% interval {r['kept_per_call_low']:.2f} "
                f"to {r['kept_per_call_high']:.2f})"
                + (f", {r['keep_rate']:.0%} of candidates" if r["keep_rate"] is not None else "")
            )
        if r["cost_known"] and r["calls_low"] is not None:
            to_target = "" if r["calls"] == r["calls_to_target"] else f"; to the target {_usd(r['cost_usd_to_target'])}"
            lines.append(
                f"cost: {_usd(r['cost_usd'])} (95% interval {_usd(r['cost_usd_low'])} to {_usd(r['cost_usd_high'])}), "
                f"{'at most ' if r['cost_spent_upper_bound'] else ''}{_usd(r['cost_usd_spent'])} spent{to_target}"
            )
        lines.append(
            f"wall time: {_time(r['seconds'])} (95% interval {_time(r['seconds_low'])} to {_time(r['seconds_high'])}), "
            f"{_time(r['seconds_spent'])} spent"
            + ("" if "train" in r["seconds_parts"] else "; no round has trained yet, so training time is left out")
        )
    if not r["cost_known"]:
        lines.append("cost: unknown (no teacher.prices)")
    lines += [f"note: {note}" for note in r["stops_early"]]
    return "\n".join(lines)
