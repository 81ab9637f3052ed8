"""`scripts/prompt_yield.py`: kept candidates per generation request, grouped by the machine tasks a prompt showed
and by its prompt length, on a run database whose answers are known."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sedi.store.rundir import DB_NAME
from sedi.store.schema import SCHEMA

pytestmark = pytest.mark.slow  # the test runs the script in a Python process

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "prompt_yield.py"


def make_run(run_dir: Path) -> None:
    run_dir.mkdir()
    db = sqlite3.connect(run_dir / DB_NAME)
    db.executescript(SCHEMA)
    db.executemany(
        "INSERT INTO seed_pool (task_id, origin, instruction) VALUES (?, ?, 'x')",
        [("h1", "human"), ("h2", "human"), ("machine-7", "machine")],
    )
    # (round, context, prompt tokens, finish, verdicts of its candidates)
    requests = [
        (0, ["h1", "h2"], 500, "stop", ["kept", "kept", "rejected"]),
        (1, ["h1", "h2"], 900, "length", ["kept", "rejected"]),
        (1, ["h1", "machine-7"], 700, "stop", ["kept", "kept", "kept", "rejected"]),
        (1, ["machine-3", "machine-7"], 1300, "length", []),  # a kept task shown by Self-Instruct, not in the pool
    ]
    for i, (rnd, context, tokens, finish, verdicts) in enumerate(requests):
        key = f"k{i}"
        db.execute(
            "INSERT INTO requests (request_key, round, kind, sample_index, context) VALUES (?, ?, 'tasks', ?, ?)",
            (key, rnd, i, json.dumps(context)),
        )
        db.execute("INSERT INTO responses VALUES (?, ?, '{}', 'text', ?, ?, 10, 0)", (key, i, finish, tokens))
        for position, verdict in enumerate(verdicts):
            db.execute(
                "INSERT INTO candidates (request_key, position, round, instruction, verdict, rule) "
                "VALUES (?, ?, ?, 'x', ?, ?)",
                (key, position, rnd, verdict, None if verdict == "kept" else "missing_output"),
            )
    db.commit()
    db.close()


def test_requests_are_grouped_by_machine_tasks_shown_and_prompt_length(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "run"), "--from-round", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])["runs"][str(tmp_path / "run")]
    shown = result["by_machine_tasks_shown"]
    assert shown["0"] == {
        "requests": 1,
        "candidates_per_request": 2.0,
        "kept_per_request": 1.0,
        "length_stopped_share": 1.0,
    }
    assert shown["1"]["kept_per_request"] == 3.0 and shown["2"]["candidates_per_request"] == 0.0
    assert list(result["by_prompt_tokens"]) == ["0-800", "800-1000", ">=1200"]
    assert result["by_prompt_tokens"]["0-800"]["kept_per_request"] == 3.0
    assert result["all"]["requests"] == 3 and result["all"]["kept_per_request"] == round(4 / 3, 3)
    assert result["candidate_share"] == {"kept": round(4 / 6, 3), "missing_output": round(2 / 6, 3)}
    everything = json.loads(
        subprocess.run(
            [sys.executable, str(SCRIPT), str(tmp_path / "run")], capture_output=True, text=True, check=True
        ).stdout
    )
    assert everything["runs"][str(tmp_path / "run")]["all"]["requests"] == 4  # round 0 counted by default
