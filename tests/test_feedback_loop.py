"""The closed loop: attractive batches steer the next prompts, the pool keeps its cap, and a run killed with
SIGKILL during generation, training or feedback finishes with the same seed pool and no repeated paid call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ledger, rows, scripted_args, sedi, status
from tests.scripted_teacher import ScriptedEngine
from tests.servers import Served, serve_app

pytestmark = pytest.mark.slow  # every test here starts `python -m sedi`

LOOP = ("--set", "generation.calls_per_round=5", "--set", "run.max_rounds=3", "--set", "feedback.interval=3")


def pool(run_dir: Path) -> list[tuple[Any, ...]]:
    return rows(run_dir, "SELECT task_id, origin, active FROM seed_pool ORDER BY task_id")


def test_attractive_tasks_join_the_pool_and_steer_the_next_prompts(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    server = scripted
    run_dir = tmp_path / "run"
    result = sedi(*scripted_args(run_dir, server, tiny_model_dir, *LOOP, "--set", "student.eval_every=2"))
    assert result.returncode == 0, result.stderr
    summary = status(run_dir)
    assert summary["train_steps"] > 0 and summary["promotions"] > 0 and summary["rounds"] == 3
    # held-out evaluation every 2nd round and after the last one
    assert rows(run_dir, "SELECT round FROM round_metrics WHERE name = 'heldout_loss' ORDER BY round") == [(1,), (2,)]
    steps = rows(run_dir, "SELECT round, step, grad_norm, task_ids, attractive FROM train_steps ORDER BY step")
    assert [s[1] for s in steps] == list(range(1, len(steps) + 1))  # one step count across rounds
    promoted = {f"machine-{i}" for _, _, _, ids, attractive in steps if attractive for i in json.loads(ids)}
    history = {t for (t,) in rows(run_dir, "SELECT task_id FROM seed_history WHERE action = 'promote'")}
    assert history == promoted
    demoted = {t for (t,) in rows(run_dir, "SELECT task_id FROM seed_history WHERE action = 'demote'")}
    active_machine = {t for t, origin, active in pool(run_dir) if origin == "machine" and active}
    assert active_machine == promoted - demoted and demoted <= promoted  # human seeds are protected
    # windows of 3 steps over the whole run (not per round); the last, partial one settled when the run ended
    for start in range(0, len(steps), 3):
        window = steps[start : start + 3]
        best = max(window, key=lambda s: s[2])
        assert [s[4] for s in window] == [int(s is best) for s in window]
    assert rows(run_dir, "SELECT value FROM meta WHERE key = 'feedback_through'") == [(str(len(steps)),)]
    # weak seeds leave by the documented rule: offspring signal below the pool's mean, at most one per window
    reasons = rows(run_dir, "SELECT reason FROM seed_history WHERE action = 'demote'")
    assert all("offspring carried training signal" in r and "pool mean" in r for (r,) in reasons)
    assert len(reasons) <= -(-len(steps) // 3)
    # round 2's prompts show machine tasks promoted by round 1's feedback, and only those
    first = [s for s in steps if s[0] == 0]
    round1 = {t for (t,) in rows(run_dir, "SELECT task_id FROM seed_history WHERE action = 'promote' AND round = 0")}
    assert round1 <= {f"machine-{i}" for _, _, _, ids, a in first if a for i in json.loads(ids)}
    contexts = [json.loads(c) for (c,) in rows(run_dir, "SELECT context FROM requests WHERE round = 1")]
    shown = {t for ctx in contexts for t in ctx if t.startswith("machine-")}
    assert shown and shown <= round1
    # the report shows, per round, the windows, promotions and demotions, and the choices in force
    from sedi.report.page import write_report

    page = write_report([run_dir], tmp_path / "report").read_text(encoding="utf-8")
    assert "Feedback per round" in page and "windows of 3 optimizer steps over the whole run" in page
    assert page.count("<th scope='row'>round ") == 3 and "prompt slots to the top 10% of seeds" in page
    windows = sum(v for (v,) in rows(run_dir, "SELECT value FROM round_metrics WHERE name = 'attractive_windows'"))
    assert windows == sum(a for *_, a in steps)  # every attractive step was counted in one round's windows


def test_demotion_keeps_the_cap_and_protects_human_seeds(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    server = scripted
    run_dir = tmp_path / "run"
    capped = (*LOOP, "--set", "feedback.max_pool_size=178", "--set", "feedback.demote=none")
    result = sedi(*scripted_args(run_dir, server, tiny_model_dir, *capped))
    assert result.returncode == 0, result.stderr
    members = pool(run_dir)
    assert sum(active for *_, active in members) == 178
    assert all(active for _, origin, active in members if origin == "human")
    assert status(run_dir)["demotions"] > 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, int]:
    """One uninterrupted run, shared by the crash tests: its directory and the requests its server saw."""
    from sedi.serve import create_app

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with serve_app(create_app(ScriptedEngine())) as server:
        assert sedi(*scripted_args(run_dir, server, tiny_model_dir, *LOOP)).returncode == 0
        return run_dir, server.counter.total


@pytest.mark.parametrize("crash_at", ["generate:1", "train:1", "feedback:1"])
def test_sigkill_anywhere_then_the_same_command_finishes_identically(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path, reference: tuple[Path, int], crash_at: str
) -> None:
    reference_dir, reference_requests = reference
    server = scripted
    run_dir = tmp_path / "crashed"
    killed = sedi(*scripted_args(run_dir, server, tiny_model_dir, *LOOP), crash_at=crash_at)
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran
    finished = sedi(*scripted_args(run_dir, server, tiny_model_dir, *LOOP))
    assert finished.returncode == 0, finished.stderr
    assert status(run_dir)["state"] == "finished"
    calls = ledger(run_dir)
    assert len(calls) == server.counter.total  # every request the server saw is in the ledger
    answered = [c["request_key"] for c in calls if c["status"] in ("ok", "length")]
    assert len(answered) == len(set(answered)) == reference_requests  # nothing received was paid for twice
    lost = [c for c in calls if c["status"] == "interrupted"]
    # only requests in flight at the kill (sent, never received) were sent again
    assert server.counter.total == reference_requests + len(lost)
    if not crash_at.startswith("generate"):
        assert not lost
    assert pool(run_dir) == pool(reference_dir)
    history = "SELECT task_id, action, round, step FROM seed_history ORDER BY id"
    assert rows(run_dir, history) == rows(reference_dir, history)
    kept = "SELECT instruction, verdict, rule FROM candidates ORDER BY round, request_key, position"
    assert rows(run_dir, kept) == rows(reference_dir, kept)
