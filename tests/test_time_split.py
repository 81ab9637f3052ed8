"""scripts/time_split.py: the seconds of each part of a run's rounds, summed over rounds and runs, with the ledger's
tokens, read from run databases written through the real store (the synthetic runs of ``benchmarks.sample_run``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.sample_run import write_sample_run
from sedi.store.db import RunStore
from tests.helpers import SCRIPTS, load_script

SCRIPT = SCRIPTS / "time_split.py"


@pytest.fixture(scope="module")
def script() -> Any:
    return load_script("time_split")


def _run(path: Path, seed: int, seconds: dict[int, dict[str, float]]) -> Path:
    write_sample_run(path, "sedi", training=False, seed=seed)  # the ledger only: no round metrics of its own
    with RunStore(path) as store:
        for round_index, parts in seconds.items():
            store.record_metrics(round_index, {f"seconds_{part}": value for part, value in parts.items()})
        store.record_metrics(0, {"seconds_train": 1.5}, accumulate=True)  # a resumed round adds to its parts
    return path


def test_parts_are_summed_over_rounds_and_runs_largest_first(script: Any, tmp_path: Path) -> None:
    a = _run(tmp_path / "a", 1, {0: {"generate": 10.0, "train": 4.0}, 1: {"generate": 6.0, "evaluate": 30.0}})
    b = _run(tmp_path / "b", 2, {0: {"generate": 2.0, "train": 0.5}})
    out = script.split([a, b])
    assert out["runs"] == 2
    assert out["seconds_by_part"] == {"evaluate": 30.0, "generate": 18.0, "train": 7.5}
    assert list(out["seconds_by_part"]) == ["evaluate", "generate", "train"]
    assert out["share_by_part"]["evaluate"] == round(30.0 / 55.5, 3)
    first = out["per_run"][0]
    assert first["seconds_by_part"] == {"generate": 16.0, "train": 5.5, "evaluate": 30.0}
    # The sample run's ledger: ten calls, the fourth failed with no tokens.
    assert first["prompt_tokens"] == sum(200 + i for i in range(10) if i != 3)
    assert first["completion_tokens"] == sum(90 + 3 * i for i in range(10) if i != 3)


@pytest.mark.slow  # a subprocess
def test_the_command_prints_one_json_line_and_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", 1, {0: {"generate": 3.0}})
    done = subprocess.run([sys.executable, str(SCRIPT), str(run)], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["seconds_by_part"] == {"generate": 3.0, "train": 1.5}
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "empty")], capture_output=True, text=True)
    assert bad.returncode != 0 and "no sedi run here" in bad.stderr
