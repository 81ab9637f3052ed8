"""`sedi export`'s provenance and training-signal columns and `--select` (sedi.export.select, sedi.store.signals),
checked against the run database they come from, on a real SeDi run (scripted teacher, tiny student)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sedi.export.formats import COLUMNS, PROVENANCE_COLUMNS
from sedi.serve import create_app
from tests.helpers import rows, scripted_args, sedi
from tests.scripted_teacher import ScriptedEngine
from tests.servers import serve_app

pytestmark = pytest.mark.slow  # a run and every export start `python -m sedi`


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("signals") / "run"
    with serve_app(create_app(ScriptedEngine())) as served:
        result = sedi(*scripted_args(run, served, tiny_model_dir, "--set", "student.heldout_size=0"))
    assert result.returncode == 0, result.stderr
    return run


def _export(run: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = sedi("export", str(run), "--format", "messages", "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def _task(row: dict[str, Any]) -> int:
    return int(row["id"].removeprefix("machine-").rsplit("-", 1)[0])


def _steps(run: Path) -> dict[int, list[tuple[int, int, float, float, int]]]:
    by_task: dict[int, list[tuple[int, int, float, float, int]]] = {}
    for round_index, step, grad_norm, loss, task_ids, attractive in rows(
        run, "SELECT round, step, grad_norm, loss, task_ids, attractive FROM train_steps ORDER BY step"
    ):
        for task in set(json.loads(task_ids)):
            by_task.setdefault(task, []).append((round_index, step, grad_norm, loss, attractive))
    return by_task


def test_every_row_carries_its_round_prompt_seeds_and_the_step_that_trained_it(run_dir: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    exported = _export(run_dir, tmp_path / "all.jsonl")
    steps = _steps(run_dir)
    assert steps and any(s[4] for mine in steps.values() for s in mine)  # trained, and one batch was attractive
    context = dict(rows(run_dir, "SELECT c.id, q.context FROM candidates c JOIN requests q USING (request_key)"))
    made_in = dict(rows(run_dir, "SELECT id, round FROM candidates"))
    for row in exported:
        task, mine = _task(row), steps.get(_task(row), [])
        assert row["round"] == made_in[task] and row["in_context"] == [str(i) for i in json.loads(context[task])]
        assert row["train_step"] == (mine[0][1] if mine else None)
        assert row["grad_norm"] == (max(s[2] for s in mine) if mine else None)
        assert row["attractive"] == any(s[4] for s in mine)
        assert row["example_loss"] is None  # measured only with feedback.promote: top_k
    assert sum(row["train_step"] is not None for row in exported) > len(exported) // 2
    loaded = load_dataset("json", data_files=str(tmp_path / "all.jsonl"), split="train")
    assert loaded.column_names == COLUMNS["messages"] and set(PROVENANCE_COLUMNS) <= set(loaded.column_names)
    card = (tmp_path / "README.md").read_text()
    assert "`grad_norm`" in card and "attractive batch" in card


def test_select_keeps_exactly_the_rows_the_signal_names(run_dir: Path, tmp_path: Path) -> None:
    every = _export(run_dir, tmp_path / "all.jsonl")
    steps = _steps(run_dir)
    attractive = {task for task, mine in steps.items() if any(s[4] for s in mine)}
    picked = _export(run_dir, tmp_path / "attractive.jsonl", "--select", "attractive")
    assert {_task(r) for r in picked} == attractive & {_task(r) for r in every}
    assert len(picked) == sum(_task(r) in attractive for r in every)  # every instance row of those tasks
    hardest = _export(run_dir, tmp_path / "hard.jsonl", "--select", "top-loss:3")
    chosen = {_task(r) for r in hardest}
    loss = {_task(r): r["step_loss"] for r in every if r["step_loss"] is not None}
    assert len(chosen) == 3 and min(loss[t] for t in chosen) >= max(v for t, v in loss.items() if t not in chosen)


@pytest.mark.parametrize("value", ["bogus", "top-loss:0", "top-loss", "attractive:3"])
def test_an_unknown_selection_is_one_line_and_writes_nothing(run_dir: Path, tmp_path: Path, value: str) -> None:
    out = tmp_path / "x.jsonl"
    result = sedi("export", str(run_dir), "--format", "messages", "--out", str(out), "--select", value)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--select" in result.stderr and "top-loss:N" in result.stderr and not out.exists()
