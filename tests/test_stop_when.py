"""run.stop_when: the marginal-value rule on recorded numbers, and a real run that stops by it and stays stopped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sedi.config.model import SediConfig, load_config
from sedi.config.run import StopWhenConfig
from sedi.exceptions import ConfigError
from sedi.stages.stopping import marginal_stop
from tests.helpers import rows, scripted_args, sedi, status
from tests.servers import Served

RULE = StopWhenConfig(window=2, min_gain_per_100_calls=0.05)


def test_a_loss_still_falling_fast_per_call_keeps_the_run_going() -> None:
    loss = {0: 3.0, 1: 2.5, 2: 2.0}  # 33% over 40 calls: 83% per 100 calls
    assert marginal_stop(RULE, loss, {0: 20, 1: 40, 2: 60}) is None


def test_a_small_gain_for_many_calls_stops_and_says_by_how_much() -> None:
    loss = {0: 3.0, 1: 2.99, 2: 2.98}  # 0.67% over 400 calls: 0.17% per 100 calls, under 5%
    why = marginal_stop(RULE, loss, {0: 100, 1: 300, 2: 500})
    assert why is not None and "0.67%" in why and "400 teacher calls" in why and "rounds 1-3" in why


def test_the_same_gain_is_worth_it_when_it_cost_few_calls() -> None:
    loss = {0: 3.0, 1: 2.99, 2: 2.98}
    assert marginal_stop(RULE, loss, {0: 10, 1: 11, 2: 12}) is None  # 0.67% for 2 calls


def test_a_loss_that_got_worse_for_window_evaluations_stops_even_at_zero_threshold() -> None:
    rule = StopWhenConfig(window=2, min_gain_per_100_calls=0.0)
    loss = {0: 3.0, 1: 2.0, 2: 2.1, 3: 2.05}
    why = marginal_stop(rule, loss, {0: 10, 1: 20, 2: 30, 3: 40})
    assert why is not None and "did not beat 2.0000" in why and "rounds 3-4" in why
    assert marginal_stop(rule, {**loss, 3: 1.9}, {0: 10, 1: 20, 2: 30, 3: 40}) is None  # one new best is enough


def test_no_decision_before_window_plus_one_evaluations_nor_on_a_stretch_that_paid_nothing() -> None:
    assert marginal_stop(RULE, {0: 3.0, 1: 3.0}, {0: 10, 1: 20}) is None
    assert marginal_stop(RULE, {0: 3.0, 1: 2.9, 2: 2.89}, {0: 10, 1: 10, 2: 10}) is None
    # rounds without evaluation (student.eval_every) are skipped, not read as zero
    assert marginal_stop(RULE, {0: 3.0, 3: 2.5, 6: 2.0}, {r: 10.0 * (r + 1) for r in range(7)}) is None


def test_stop_when_without_heldout_evaluation_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  stop_when: {window: 2}\nstudent:\n  heldout_size: 0\n")
    with pytest.raises(ConfigError, match=r"student\.heldout_size"):
        load_config(path)
    assert SediConfig.model_validate({"run": {"stop_when": {}}}).run.stop_when == StopWhenConfig()


@pytest.mark.slow
def test_a_run_stops_by_the_rule_says_why_and_a_rerun_does_not_resume_paying(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    # Any gain under 1000% per 100 calls is too small: the rule fires at its first chance, after 2 evaluations.
    args = scripted_args(
        run_dir, scripted, tiny_model_dir,
        "--set", "run.max_rounds=5", "--set", "generation.calls_per_round=2",
        "--set", "run.stop_when.window=1", "--set", "run.stop_when.min_gain_per_100_calls=10",
    )  # fmt: skip
    first = sedi(*args)
    assert first.returncode == 0, first.stderr
    assert "run.stop_when" in (first.stdout + first.stderr).replace("\n", "")  # the CLI says why it ended
    got = status(run_dir)
    assert got["state"] == "finished" and "run.stop_when" in got["outcome"]
    assert got["calls"] == 4  # two rounds of 2 calls, two evaluations, then the rule stopped it
    said = re.search(r"student: (\d+) (steps?)\b", first.stderr)  # the summary line counts steps in words
    assert said and int(said[1]) == got["train_steps"] > 0, first.stderr
    assert (said[2] == "step") == (got["train_steps"] == 1)  # "1 step", "3 steps"
    assert [r[0] for r in rows(run_dir, "SELECT round FROM rounds ORDER BY round")] == [0, 1]
    again = sedi(*args)
    assert again.returncode == 0, again.stderr
    assert status(run_dir)["calls"] == 4 and "run.stop_when" in status(run_dir)["outcome"]
    # The rule only decides how much to buy: a looser one may resume the run, which then goes on.
    looser = sedi(*args, "--set", "run.stop_when.window=5", "--set", "run.max_rounds=3")
    assert looser.returncode == 0, looser.stderr
    assert status(run_dir)["calls"] == 6 and status(run_dir)["outcome"] == "finished 3 rounds"
