"""The shaping-regret simulation: the shipped rule over the default settings' derived shapes on synthetic teachers.
It must show a cost where the settings' own shape is best and a saving where another shape keeps far more."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs the script in a Python process

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_shaping_regret.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_learning_costs_calls_where_the_settings_shape_is_best_and_saves_where_another_is() -> None:
    done = _run("--seeds", "30", "--kept", "short-best=1,1,4,1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["shapes"]) == 4 and result["rule"]["floor"] == 0.05
    best = result["settings-best"]
    assert best["calls_per_kept_ratio"] > 1.0  # exploration spends requests on worse shapes
    assert best["request_share"][0] == max(best["request_share"])
    assert best["best_named_share"] > 0.9
    # with no gap between the three shapes asking 8, only the one asking 4 costs: a few percent at most
    assert 1.0 <= result["format-following"]["calls_per_kept_ratio"] < 1.1
    short = result["short-best"]
    assert short["calls_per_kept_ratio"] < 0.5 and short["request_share"][2] > 0.5
    assert min(short["request_share"]) >= 0.04  # the floor: each shape keeps about 5% of the requests


def test_a_bad_scenario_is_one_line_and_exit_2() -> None:
    done = _run("--kept", "x=1,2")
    assert done.returncode == 2
    assert "--kept x=1,2: give 4 values" in done.stderr.strip().splitlines()[-1]
