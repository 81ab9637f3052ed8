"""Runs side by side against one shared embedded teacher server (experiment.parallel): the tiny model served by the real
``sedi serve-teacher`` process, each run in its own process with its own ledger, budget and response cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sedi.config.model import SediConfig, load_config
from sedi.experiment.parallel import _StudentSlots, run_jobs
from sedi.loop import run
from tests.helpers import rows
from tests.servers import Served


def _config(tiny_model_dir: Path, seed: int, max_calls: int, *extra: str) -> SediConfig:
    sets = [
        "teacher.provider=local", f"teacher.local.model={tiny_model_dir}", "teacher.model=tiny-teacher",
        "generation.sampling.max_tokens=16", "generation.calls_per_round=2", "generation.human_in_context=2",
        "run.max_rounds=5", f"budget.max_calls={max_calls}", f"run.seed={seed}",
        f"student.model={tiny_model_dir}", "student.heldout_size=0",
    ]  # fmt: skip
    return load_config(None, [*sets, *extra])


def _keys(run_dir: Path) -> list[str]:
    return sorted(k for (k,) in rows(run_dir, "SELECT request_key FROM requests"))


@pytest.mark.slow
def test_two_runs_share_one_server_and_keep_their_ledgers_budgets_and_request_keys(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    a, b, logs = tmp_path / "a", tmp_path / "b", tmp_path / "logs"
    ended: list[str] = []
    results = run_jobs(
        [("a", _config(tiny_model_dir, 1, 3), a), ("seed-2/b", _config(tiny_model_dir, 2, 3), b)],
        logs,
        on_done=lambda r: ended.append(r.name),
    )
    assert [(r.name, r.state) for r in results] == [("a", "budget_exhausted"), ("seed-2/b", "budget_exhausted")]
    assert sorted(ended) == ["a", "seed-2/b"] and all(r.ok and r.run_dir in (a, b) for r in results)
    # one server for both, batching both runs' requests (4 in flight each), and no server of their own
    log = (logs / "teacher.log").read_text()
    assert log.count("up to 8 requests decode together") == 1 and log.count("POST /v1/completions") == 6
    assert not (a / "logs").exists() and not (b / "logs").exists()
    urls = {u for d in (a, b) for (u,) in rows(d, "SELECT DISTINCT base_url FROM calls")}
    assert len(urls) == 1
    for run_dir in (a, b):  # each its own ledger, each stopped by its own budget of 3 calls
        assert rows(run_dir, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM calls") == [(3, 3)]
        assert rows(run_dir, "SELECT COUNT(*) FROM responses") == [(3,)]
    assert set(_keys(a)).isdisjoint(_keys(b))  # other seeds, other requests
    # what a request is (and so its cache key) never names the server: run alone, a plans the same requests
    alone = tmp_path / "alone"
    assert run(_config(tiny_model_dir, 1, 3), alone, "test").state == "budget_exhausted"
    assert (alone / "logs" / "teacher.log").is_file()  # it started a server of its own
    assert _keys(alone) == _keys(a) and len(_keys(a)) >= 3
    paid = "SELECT request_key FROM calls ORDER BY request_key"
    assert rows(alone, paid) == rows(a, paid)
    assert rows(alone, "SELECT digest, body FROM configs") == rows(a, "SELECT digest, body FROM configs")
    (url,) = urls
    assert all(url.split(":")[-1].split("/")[0] not in body for (body,) in rows(a, "SELECT request FROM responses"))


@pytest.mark.slow
def test_a_failed_job_is_reported_and_the_others_finish(tmp_path: Path, tiny_model_dir: Path) -> None:
    broken = _config(tiny_model_dir, 1, 2, f"student.model={tmp_path / 'no-such-student'}")
    results = run_jobs(
        [("broken", broken, tmp_path / "broken"), ("good", _config(tiny_model_dir, 1, 2), tmp_path / "good")],
        tmp_path / "logs",
    )
    assert results[0].state == "failed" and "student.model" in results[0].message and not results[0].ok
    assert "ConfigError" in (tmp_path / "logs" / "broken.log").read_text()  # the traceback is in its log
    assert results[1].state == "budget_exhausted"
    assert rows(tmp_path / "good", "SELECT COUNT(*) FROM calls") == [(2,)]


def test_student_slots_let_only_that_many_holders_in_at_once(tmp_path: Path) -> None:
    slots, inside, most = _StudentSlots(tmp_path, 1), [0], [0]

    def hold() -> None:
        with _StudentSlots(tmp_path, 1):  # each holder opens its own lock files, as each run's process does
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.3)
            inside[0] -= 1

    with slots:
        worker = threading.Thread(target=hold)
        worker.start()
        time.sleep(0.8)
        assert inside[0] == 0  # waiting for the slot this thread holds
    worker.join(timeout=5)
    assert most[0] == 1 and not worker.is_alive()


@pytest.mark.slow
def test_a_parallel_comparison_on_a_cpu_lets_one_student_work_at_a_time(
    tmp_path: Path, tiny_model_dir: Path, scripted: Served
) -> None:
    import json

    import torch

    from sedi.experiment.comparison import compare

    if torch.cuda.is_available():
        pytest.skip("the one-student rule is for machines without a GPU")
    sets = [
        f"student.model={tiny_model_dir}", "student.heldout_size=0", "teacher.provider=openai",
        f"teacher.base_url={scripted.base_url}", "teacher.model=scripted-teacher", "generation.calls_per_round=2",
        "run.max_rounds=5", "budget.max_calls=4", "run.seed=1",
    ]  # fmt: skip
    out = tmp_path / "cmp"
    arms = ["self-instruct", "default"]
    table = compare(load_config(None, sets), out, "test", stop_at="budget", arms=arms, parallel=True)
    specs = [json.loads(p.read_text()) for p in sorted((out / "logs").glob("*.job.json"))]
    assert len(specs) == 2 and all(spec["max_training"] == 1 for spec in specs)
    assert (out / "logs" / "student-slots" / "slot-0").is_file()  # the students went through the one slot
    assert not (out / "logs" / "student-slots" / "slot-1").exists()
    assert all(rows(out / arm, "SELECT COUNT(*) FROM calls") == [(4,)] for arm in arms)
    assert all(rows(out / arm, "SELECT COUNT(*) FROM train_steps")[0][0] > 0 for arm in arms)  # both trained
    assert table["seeds"] == [1]
