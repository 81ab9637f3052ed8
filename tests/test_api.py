"""The Python API (sedi.api) on one real run: the scripted teacher behind the real server and the real openai
client, the tiny student trained by TRL, real SQLite. Everything the API returns is checked against what the
command line reports for the same run directory (``sedi status --json``, data/kept.jsonl, the ledger table),
and the API keeps the command's guarantees: a bad config or run directory raises before any request, a rerun
replays paid answers from the cache, and reading a run changes nothing in it."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sedi
from sedi.config.model import load_config
from sedi.store.db import RunStore
from tests.helpers import SMALL_PRICED_ROUND, ledger, rows, snapshot, status
from tests.scripted_teacher import ScriptedEngine
from tests.servers import Served, serve_app

REPO = Path(__file__).resolve().parent.parent


def _settings(served: Served, student: Path) -> dict[str, Any]:
    """One small priced round against the scripted teacher (as tests.helpers.scripted_args, as a dict)."""
    return {
        **SMALL_PRICED_ROUND,
        "student.model": str(student),
        "teacher.provider": "openai",
        "teacher.base_url": served.base_url,
        "teacher.model": "scripted-teacher",
    }


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    from sedi.serve import create_app

    with serve_app(create_app(ScriptedEngine())) as running:
        yield running


@pytest.fixture(scope="module")
def made(served: Served, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> sedi.Run:
    """One finished round, made through ``sedi.run`` with a dict of dotted keys."""
    run_dir = tmp_path_factory.mktemp("api") / "run"
    return sedi.run(_settings(served, tiny_model_dir), run_dir=str(run_dir))


@pytest.mark.slow
def test_run_returns_the_run_and_its_status_is_what_sedi_status_json_prints(made: sedi.Run) -> None:
    assert made.outcome is not None and made.outcome.state == "finished"
    printed = status(made.run_dir)  # `sedi status RUN_DIR --json` in a subprocess
    assert made.status() == printed and sedi.open_run(made.run_dir).status() == printed
    assert printed["kept"] > 0 and printed["calls"] > 0 and printed["train_steps"] > 0


@pytest.mark.slow
def test_kept_is_a_dataset_of_the_kept_tasks_as_kept_jsonl_holds_them(made: sedi.Run) -> None:
    import datasets

    kept = sedi.open_run(made.run_dir).kept()
    written = [json.loads(line) for line in (made.run_dir / "data" / "kept.jsonl").read_text().splitlines()]
    assert isinstance(kept, datasets.Dataset) and kept.num_rows == len(written) == made.status()["kept"]
    for column in ("instruction", "input", "output", "id", "round", "call_id", "in_context", "instances"):
        assert column in kept.column_names
    assert kept["id"] == [r["id"] for r in written] and kept["instruction"] == [r["instruction"] for r in written]
    assert kept["output"] == [r["output"] for r in written] and kept["input"] == [r["input"] for r in written]
    assert kept["round"] == [r["provenance"]["round"] for r in written] == [0] * kept.num_rows
    assert kept["in_context"] == [r["provenance"]["in_context"] for r in written]
    # each kept task's call is a real ledger row that answered
    answered = {row["id"] for row in ledger(made.run_dir) if row["status"] == "ok"}
    assert set(kept["call_id"]) <= answered


@pytest.mark.slow
def test_ledger_has_one_row_per_teacher_call_as_the_ledger_table_does(made: sedi.Run) -> None:
    frame = sedi.open_run(made.run_dir).ledger()
    table = ledger(made.run_dir)
    summary = made.status()
    assert len(frame) == len(table) == summary["calls"]
    assert frame["id"].tolist() == [row["id"] for row in table]
    assert int(frame["prompt_tokens"].sum()) == summary["prompt_tokens"]
    assert int(frame["completion_tokens"].sum()) == summary["completion_tokens"]
    assert frame["cost_usd"].sum() == pytest.approx(summary["cost_usd"], abs=1e-6)  # status rounds to 6 places
    # the purpose of each call: task generation first, then classification and instances per kept candidate
    assert set(frame["kind"]) <= {"tasks", "classify", "instances", "repair"} and "tasks" in set(frame["kind"])
    assert (frame["round"] == 0).all()


@pytest.mark.slow
def test_metrics_has_one_row_per_round_with_what_the_round_measured(made: sedi.Run) -> None:
    frame = sedi.open_run(made.run_dir).metrics()
    recorded = rows(made.run_dir, "SELECT round, name, value FROM round_metrics")
    summary = made.status()
    assert frame["round"].tolist() == [0] and frame["stage"].tolist() == ["done"]
    assert {name for _, name, _ in recorded} <= set(frame.columns)
    assert frame.loc[0, "kept"] == summary["kept"] and frame.loc[0, "calls"] == summary["calls"]
    for r, name, value in recorded:
        cell = frame.loc[frame["round"] == r, name].item()
        assert cell == value or (value is None and cell != cell)  # NaN for a metric stored as null


@pytest.mark.slow
def test_reading_a_run_changes_nothing_and_works_on_a_read_only_copy(made: sedi.Run, tmp_path: Path) -> None:
    before = snapshot(made.run_dir)
    opened = sedi.open_run(made.run_dir)
    opened.kept(), opened.ledger(), opened.metrics(), opened.status()
    assert snapshot(made.run_dir) == before
    copy = tmp_path / "copy"
    shutil.copytree(made.run_dir, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        frozen = sedi.open_run(copy)
        assert frozen.kept().num_rows == made.status()["kept"] and len(frozen.ledger()) == made.status()["calls"]
        assert len(frozen.metrics()) == 1 and frozen.status() == made.status() | {"run_dir": str(copy)}
        assert snapshot(copy) == before
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow
def test_rerunning_a_finished_run_through_the_api_sends_nothing(
    made: sedi.Run, served: Served, tiny_model_dir: Path
) -> None:
    sent, calls = served.counter.total, len(ledger(made.run_dir))
    # the same settings, this time as a SediConfig built the way `--set` builds it
    config = load_config(None, [f"{key}={value}" for key, value in _settings(served, tiny_model_dir).items()])
    again = sedi.run(config, run_dir=made.run_dir)
    assert again.outcome is not None and again.outcome.state == "finished"
    assert served.counter.total == sent and len(ledger(made.run_dir)) == calls  # every answer from the cache


def test_a_run_with_nothing_yet_reads_as_empty_tables_with_their_columns(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run"):  # the database as a run creates it before its first request
        pass
    opened = sedi.open_run(tmp_path / "run")
    kept, calls, rounds = opened.kept(), opened.ledger(), opened.metrics()
    assert kept.num_rows == 0 and {"instruction", "input", "output", "round", "in_context"} <= set(kept.column_names)
    assert len(calls) == 0 and {"id", "status", "prompt_tokens", "charged_tokens", "kind"} <= set(calls.columns)
    assert len(rounds) == 0 and list(rounds.columns) == ["round", "stage"]
    assert opened.status()["calls"] == 0 and opened.outcome is None


def test_open_run_on_a_directory_without_a_run_raises_run_dir_error(tmp_path: Path) -> None:
    with pytest.raises(sedi.RunDirError, match="no sedi run here"):
        sedi.open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sedi.RunDirError, match="no sedi run here"):
        sedi.open_run(tmp_path / "empty")


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"budget.max_calls": "many"}, "field 'budget.max_calls'"),
        ({"generation": {"calls_per_rounds": 2}}, "unknown key 'generation.calls_per_rounds'"),
        ({"seeds.path": "/nonexistent/seeds.jsonl"}, "/nonexistent/seeds.jsonl"),
        ({"run.seed.value": 1}, "field 'run.seed'"),  # a dotted key through a value, not a section
    ],
)
def test_a_bad_config_raises_config_error_before_any_teacher_request(
    bad: dict[str, Any], says: str, served: Served, tiny_model_dir: Path, tmp_path: Path
) -> None:
    sent = served.counter.total
    with pytest.raises(sedi.ConfigError, match=says):
        sedi.run(_settings(served, tiny_model_dir) | bad, run_dir=tmp_path / "run")
    assert served.counter.total == sent and not (tmp_path / "run").exists()


def test_a_config_file_and_a_missing_one(tmp_path: Path) -> None:
    with pytest.raises(sedi.ConfigError, match=r"missing\.yaml"):
        sedi.run(tmp_path / "missing.yaml", run_dir=tmp_path / "run")
    (tmp_path / "bad.yaml").write_text("run:\n  max_rounds: -3\n")
    with pytest.raises(sedi.ConfigError, match=r"bad\.yaml"):
        sedi.run(str(tmp_path / "bad.yaml"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_compare_runs_the_arms_and_returns_the_table_sedi_compare_writes(
    served: Served, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(served, tiny_model_dir) | {"generation.target_kept": 3}  # one round per arm
    result = sedi.compare(settings, tmp_path / "cmp", arms=["self-instruct", "default"])
    assert result.table == json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert result.markdown() == (tmp_path / "cmp" / "comparison.md").read_text()
    assert result.arms == ["self-instruct", "default"] and result.table["baseline"] == "self-instruct"
    frame = result.frame()
    assert frame.index.tolist() == result.arms
    for arm in result.arms:
        (run,) = result.runs(arm)
        assert run.run_dir == tmp_path / "cmp" / arm
        printed = status(run.run_dir)  # `sedi status --json` of the arm's run
        assert frame.loc[arm, "calls"] == printed["calls"] and frame.loc[arm, "kept"] == printed["kept"] >= 3
        assert len(run.ledger()) == printed["calls"]
    assert result.table["calls_per_kept_ratio"] is not None
    with pytest.raises(KeyError, match="sedi-paper"):
        result.runs("sedi-paper")


def test_compare_rejects_an_unknown_arm_and_a_bad_stop_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(sedi.ConfigError, match="no-such-arm"):
        sedi.compare(None, tmp_path / "cmp", arms=["self-instruct", "no-such-arm"])
    with pytest.raises(sedi.ConfigError, match="stop_at"):
        sedi.compare(None, tmp_path / "cmp", stop_at="forever")
    assert not (tmp_path / "cmp").exists()


def test_sedi_compare_stays_the_function_after_the_comparison_module_is_imported() -> None:
    import importlib

    importlib.import_module("sedi.experiment.comparison")  # as `sedi compare` loads it
    assert callable(sedi.compare) and sedi.compare.__module__ == "sedi.api"


@pytest.mark.slow
def test_the_example_runs_on_the_embedded_teacher_and_prints_the_kept_count(tmp_path: Path) -> None:
    example = REPO / "examples" / "python_api.py"
    result = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "run")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    kept = sedi.open_run(tmp_path / "run").status()["kept"]
    assert f"kept {kept} tasks" in result.stdout
