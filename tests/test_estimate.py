"""`sedi estimate` against the scripted teacher behind the real server (tiny student): a pilot's calls are the
real run's first calls (paid once), the real run's calls fall inside the forecast interval, bounds mode sends
nothing, and bad input is one line with exit code 2 before any call."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from sedi.cli.estimate import forecast
from sedi.config.model import SediConfig
from sedi.config.seeds import load_seed_tasks
from sedi.report.stats import calls_to_keep
from tests.helpers import ledger, scripted_args, sedi, status
from tests.servers import Served

PRICES = ("--set", "teacher.prices.prompt=0.15", "--set", "teacher.prices.completion=0.6")  # USD per million
SMALL = ("--set", "generation.target_kept=20", "--set", "run.max_rounds=10")  # two rounds of 4 calls reach it


def _estimate(run_dir: Path, server: Served, student: Path, *extra: str) -> list[str]:
    """``sedi estimate`` with the same settings ``scripted_args`` gives ``sedi run``."""
    return ["estimate", *scripted_args(run_dir, server, student, *extra)[1:]]


def _json(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.slow
def test_a_pilot_forecasts_the_real_run_which_pays_nothing_twice(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    est = _json(sedi(*_estimate(run_dir, scripted, tiny_model_dir, *SMALL, *PRICES, "--pilot-calls", "2", "--json")))
    pilot = ledger(run_dir)
    assert est["basis"] == "pilot" and est["pilot_calls"] == est["calls_spent"] == len(pilot) == 2
    assert status(run_dir)["state"] == "budget_exhausted"  # the pilot stopped at its own budget.max_calls
    # The forecast is built from the ledger: per-call means, totals, USD at the prices given.
    prompt, completion = (sum(row[k] for row in pilot) for k in ("prompt_tokens", "completion_tokens"))
    assert est["prompt_tokens_per_call"] == prompt / 2 and est["completion_tokens_per_call"] == completion / 2
    assert est["cost_usd_spent"] == round((prompt * 0.15 + completion * 0.6) / 1e6, 6)
    assert est["prompt_tokens"] == round(prompt + prompt / 2 * (est["calls"] - 2))
    cost = (est["prompt_tokens"] * 0.15 + est["completion_tokens"] * 0.6) / 1e6
    assert est["cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert est["calls_low"] <= est["calls"] <= est["calls_high"] and est["calls"] % 4 == 0  # whole rounds
    assert est["cost_usd_low"] <= est["cost_usd"] <= est["cost_usd_high"]
    assert 0 < est["kept_per_call_low"] < est["kept_per_call"] == est["kept"] / 2 < est["kept_per_call_high"]

    # The real run on the same directory (default budget, raised on resume) reaches the target.
    result = sedi(*scripted_args(run_dir, scripted, tiny_model_dir, *SMALL, *PRICES))
    assert result.returncode == 0, result.stderr
    final, rows = status(run_dir), ledger(run_dir)
    assert final["state"] == "finished" and final["kept"] >= 20
    assert est["calls_low"] <= final["calls"] <= est["calls_high"]
    # Nothing paid twice: the pilot's rows are the run's first rows, and every request was answered once.
    assert rows[:2] == pilot and len(rows) == final["calls"] == scripted.request_counts["/v1/completions"]
    keys = [row["request_key"] for row in rows if row["status"] == "ok"]
    assert len(keys) == len(rows) == len(set(keys))
    # sedi status gives the cost of each kept task, from the same ledger.
    prompt, completion = (sum(row[k] for row in rows) for k in ("prompt_tokens", "completion_tokens"))
    cost = round((prompt * 0.15 + completion * 0.6) / 1e6, 6)
    assert final["cost_usd"] == cost and final["usd_per_kept"] == round(cost / final["kept"], 8)
    assert final["tokens_per_kept"] == round((prompt + completion) / final["kept"], 2)
    assert est["cost_usd_low"] <= final["cost_usd"] <= est["cost_usd_high"]

    # Estimating again reads the run (basis "run"): the target is reached, nothing is left to pay.
    again = _json(sedi(*_estimate(run_dir, scripted, tiny_model_dir, *SMALL, *PRICES, "--json")))
    assert again["basis"] == "run" and again["calls"] == again["calls_high"] == final["calls"]
    assert again["cost_usd"] == pytest.approx(final["cost_usd"], abs=1e-6) and len(ledger(run_dir)) == final["calls"]


@pytest.mark.slow
def test_bounds_without_a_run_send_nothing(tmp_path: Path, scripted: Served, tiny_model_dir: Path) -> None:
    run_dir = tmp_path / "new"
    est = _json(sedi(*_estimate(run_dir, scripted, tiny_model_dir, *SMALL, "--json")))
    assert est["basis"] == "bounds" and est["keep_rate"] is None and est["kept_per_call"] is None
    assert est["calls"] is None and est["calls_high"] is None and est["cost_usd"] is None
    # Learned shapes (the default) may send 4/3 of sampling.max_tokens 384: 20 tasks at most 512 // 8 = 64 per
    # completion call: one call, rounded up to a round of 4
    assert est["calls_low"] == 4 and est["completion_tokens_per_call_high"] == 512
    assert est["cost_known"] is False and est["cost_usd_per_call_high"] is None  # loopback without prices
    text = sedi(*_estimate(run_dir, scripted, tiny_model_dir, *SMALL, *PRICES))
    assert text.returncode == 0, text.stderr
    assert "unknown without a keep rate (no point estimate); at least 4" in text.stdout
    assert "cost: unknown" not in text.stdout and "at most $" in text.stdout  # priced: a call's worst case
    assert not run_dir.exists() and sum(scripted.request_counts.values()) == 0


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_before_any_call(tmp_path: Path, scripted: Served, tiny_model_dir: Path) -> None:
    run_dir = tmp_path / "run"
    cases = [
        (("--set", "generation.target_kept=0"), "field 'generation.target_kept'"),
        (("--set", "generation.bogus=1"), "unknown key 'generation.bogus'"),
        (("--set", f"student.model={tmp_path / 'nowhere'}"), "field 'student.model'"),
    ]
    for extra, expected in cases:
        result = sedi(*_estimate(run_dir, scripted, tiny_model_dir, *extra, "--pilot-calls", "2", "--json"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (extra, result.stderr)
        assert lines[0].startswith("error: ") and expected in lines[0], (extra, result.stderr)
        assert result.stdout == ""
    assert not run_dir.exists() and sum(scripted.request_counts.values()) == 0


@pytest.mark.parametrize(
    ("sets", "ends_by", "calls"),
    [
        (["run.max_rounds=2"], "run.max_rounds", 20),  # 2 rounds of 10 calls, all made already
        (["run.max_rounds=100"], "budget.max_calls", 200),  # the default budget
        # $0.10 at the seen $0.0008 per call: 125 calls in all (the reservation may stop it one call sooner)
        (["run.max_rounds=100", "budget.max_calls=null", "budget.max_cost_usd=0.1"], "budget.max_cost_usd", 125),
        (["run.max_rounds=100", "budget.max_calls=null", "generation.target_kept=100"], "generation.target_kept", 50),
    ],
)
def test_the_headline_is_the_run_as_configured_and_the_target_is_beside_it(
    sets: list[str], ends_by: str, calls: int
) -> None:
    from sedi.cli.estimate import Seen, describe, forecast
    from sedi.config.model import load_config
    from sedi.config.seeds import load_seed_tasks

    prices = ["teacher.prices.prompt=20", "teacher.prices.completion=100"]  # USD per million tokens
    config = load_config(None, ["generation.calls_per_round=10", *prices, *sets])
    # 2 kept tasks per call seen over 20 calls, each of 30 prompt + 2 completion tokens ($0.0008).
    seen = Seen(calls=20, slots=20, kept=40, candidates=80, prompt_tokens=600, completion_tokens=40, seconds=100.0)
    est = forecast(config, seen, load_seed_tasks(None), "run")
    assert (est["ends_by"], est["calls"]) == (ends_by, calls)
    assert est["calls_low"] <= est["calls"] <= est["calls_high"] <= est["calls_to_target_high"]
    assert est["calls_to_target"] >= est["calls"] and est["cost_usd"] == pytest.approx(calls * 0.0008)
    assert est["kept_forecast"] == min(config.generation.target_kept, 2 * calls)
    text = describe({**est, "run_dir": "r", "pilot_calls": 0})
    assert f"the run as configured: {calls} calls" in text and f"it ends by {ends_by}" in text
    assert f"calls to reach generation.target_kept {config.generation.target_kept}: {est['calls_to_target']}" in text


def test_the_calls_interval_covers_simulated_runs() -> None:
    """The method's claim, checked on runs whose kept tasks per call are Poisson: 95% intervals cover about 95%."""
    rng = random.Random(7)

    def poisson(mean: float) -> int:
        limit, k, p = math.exp(-mean), 0, rng.random()
        while p > limit:
            k, p = k + 1, p * rng.random()
        return k

    point, low, high = calls_to_keep(2, 7, 13)  # 7 kept in 2 calls, 13 more to keep
    assert point == 13 * 2 / 7 and high is not None and low < point < high
    assert calls_to_keep(4, 0, 10)[0] is None and calls_to_keep(4, 0, 10)[2] is None  # nothing kept: no point
    assert calls_to_keep(4, 5, 0) == (0.0, 0.0, 0.0)
    covered = tried = 0
    for _ in range(400):
        pilot = 3
        kept = sum(poisson(2.0) for _ in range(pilot))
        _, low, high = calls_to_keep(pilot, kept, 40)
        assert high is not None
        calls = got = 0
        while got < 40:
            got, calls = got + poisson(2.0), calls + 1
        covered, tried = covered + (low <= calls <= high), tried + 1
    assert 0.9 <= covered / tried <= 0.995


def test_bounds_cover_every_shape_a_learning_run_may_send() -> None:
    """With generation.shaping 'learn' a request may take any listed shape: the worst case per call is the largest
    shape's max_tokens (512 by default, above sampling.max_tokens 384), and the fewest calls use it too."""
    seeds = load_seed_tasks(None)
    fixed = forecast(SediConfig.model_validate({"generation": {"shaping": "fixed"}}), None, seeds, "pilot")
    learn = forecast(SediConfig.model_validate({"generation": {"shaping": "learn"}}), None, seeds, "pilot")
    assert (fixed["completion_tokens_per_call_high"], learn["completion_tokens_per_call_high"]) == (384, 512)
    assert learn["calls_low"] <= fixed["calls_low"]  # 512 // 8 tasks at most per call, against 384 // 8
    # the shapes take turns in the prompt bound: shorter prompts (4 and 2 short tasks) lower its mean, not its max
    assert learn["prompt_tokens_per_call_bound_mean"] < fixed["prompt_tokens_per_call_bound_mean"]
    assert learn["prompt_tokens_per_call_high"] <= fixed["prompt_tokens_per_call_high"]


def test_spent_cost_is_never_shown_below_what_the_budget_charged() -> None:
    from sedi.cli.estimate import Seen, forecast
    from sedi.config.model import load_config
    from sedi.config.seeds import load_seed_tasks

    config = load_config(None, ["teacher.prices.prompt=1", "teacher.prices.completion=1"])
    # 4 calls reported 1,000 tokens ($0.001), but two came back without usage and were charged their worst case.
    seen = Seen(calls=4, slots=4, kept=8, candidates=20, prompt_tokens=800, completion_tokens=200, seconds=10.0)
    exact = forecast(config, seen, load_seed_tasks(None), "run")
    assert exact["cost_usd_spent"] == 0.001 and exact["cost_spent_upper_bound"] is False
    bound = Seen(**{**seen.__dict__, "charged_usd": 0.0031, "cost_upper_bound": True})
    out = forecast(config, bound, load_seed_tasks(None), "run")
    assert out["cost_usd_spent"] == 0.0031 and out["cost_spent_upper_bound"] is True
