"""``teacher.batch_api``: a round's requests as OpenAI Batch API jobs, against ``tests.batch_server.BatchServer`` (the
Batch API as OpenAI documents it) over real HTTP with the real openai client.

Checked at the server's side as well as in the ledger: a batch run keeps the same tasks as a synchronous one at the
discounted price; each ledger row carries its batch id; failed lines (partial, expired, failed jobs) go out again
in a later job up to ``teacher.max_retries``; a cancelled job stops the call; the budget bounds what a job carries;
and a run killed with SIGKILL while its job runs, or between the job's creation and its record, resumes that job
without creating another one or paying for anything twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import SediConfig
from sedi.config.teacher import Prices
from sedi.exceptions import SediError, TeacherError
from sedi.report.summary import read_summary
from sedi.store.db import RunStore
from sedi.teacher.budget import Budget
from sedi.teacher.client import CompletedRequests, Endpoint, TeacherClient, TeacherRequest, UsageMisreported
from tests.batch_server import BatchServer
from tests.fault_server import FaultServer, tagged
from tests.helpers import invoke, ledger, rows, scripted_args, sedi, status
from tests.servers import Served, read_body, serve_app

PROMPT_RATE, COMPLETION_RATE = 2.0, 8.0  # USD per million tokens
PRICES = ("--set", f"teacher.prices.prompt={PROMPT_RATE}", "--set", f"teacher.prices.completion={COMPLETION_RATE}")
BATCH = ("--set", "teacher.batch_api=true", "--set", "teacher.batch_api_poll_s=0.05")
ONE_ROUND = ("--set", "run.max_rounds=1", "--set", "student.heldout_size=0")  # no held-out evaluation: seconds


def _full_cost(row: dict[str, Any]) -> float:
    return (row["prompt_tokens"] * PROMPT_RATE + row["completion_tokens"] * COMPLETION_RATE) / 1e6


@pytest.fixture
def faulty() -> Iterator[tuple[BatchServer, Served]]:
    """Batch jobs whose lines are answered by the fault server (tags in a prompt pick a line's fault)."""
    server = BatchServer(FaultServer(), step_s=0.02)
    with serve_app(server.app) as served:
        yield server, served


@pytest.fixture
def scripted_batch() -> Iterator[tuple[BatchServer, Served]]:
    """Batch jobs whose lines are answered by the scripted teacher (tests/scripted_teacher.py), for whole runs."""
    from sedi.serve import create_app
    from tests.scripted_teacher import ScriptedEngine

    server = BatchServer(create_app(ScriptedEngine()), step_s=0.05)
    with serve_app(server.app) as served:
        yield server, served


def _complete(
    run_dir: Path,
    base_url: str,
    prompts: list[str],
    budget: dict[str, Any] | None = None,
    stop_after_s: float | None = None,
    **teacher: Any,
) -> tuple[CompletedRequests | SediError | None, list[dict[str, Any]], Budget]:
    """One start of a batch client over HTTP: what ``complete_all`` returned (or raised; None when it was stopped
    after ``stop_after_s``), the ledger, the budget."""
    prices = {"prompt": PROMPT_RATE, "completion": COMPLETION_RATE}
    settings = {"provider": "openai", "base_url": base_url, "batch_api": True, "batch_api_poll_s": 0.01,
                "max_retries": 2, "backoff_base_s": 0, "prices": prices} | teacher  # fmt: skip
    config = SediConfig.model_validate({"teacher": settings, "budget": budget or {"max_calls": None}})
    with RunStore(run_dir) as store:
        spent = Budget(config.budget, store.spent(config.teacher.prices))
        client = TeacherClient(config.teacher, store, spent, lambda: Endpoint(base_url, "sk-test"))
        requests = [TeacherRequest(prompt=p, max_tokens=16) for p in prompts]

        async def go() -> CompletedRequests | SediError | None:
            try:
                return await asyncio.wait_for(client.complete_all(requests), stop_after_s)
            except SediError as exc:
                return exc
            except TimeoutError:
                return None
            finally:
                await client.aclose()

        outcome = asyncio.run(go())
        return outcome, store.ledger(), spent


def _prompts(n: int) -> list[str]:
    return [f"Task 1: item {i}\nTask 2:" for i in range(n)]


def test_a_job_answers_every_request_at_the_discount_with_its_batch_id_and_a_replay_sends_nothing(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    server, served = faulty
    outcome, calls, budget = _complete(tmp_path / "run", served.base_url, _prompts(6))
    assert isinstance(outcome, CompletedRequests) and outcome.budget_stop is None
    assert all(r is not None and r.text.startswith("Task 2: answer") for r in outcome.responses)
    assert len(server.created) == 1 and server.uploads == 1 and served.request_counts["/v1/batches"] == 1
    (batch_id,) = server.created
    assert len(calls) == 6 and all(r["status"] == "ok" and r["batch_id"] == batch_id for r in calls)
    for row in calls:  # half price: OpenAI's batch discount, the default teacher.prices.batch_api_discount
        assert row["cost_usd"] == pytest.approx(0.5 * _full_cost(row)) and row["charged_cost_usd"] == row["cost_usd"]
        assert row["reserved_cost_usd"] == pytest.approx(0.5 * ((row["reserved_tokens"] - 16) * 2.0 + 16 * 8.0) / 1e6)
    total = sum(r["cost_usd"] for r in calls)
    assert budget.spent.cost_usd == pytest.approx(total) and budget.reserved.calls == 0 and budget.in_flight == 0
    assert read_summary(tmp_path / "run")["cost_usd"] == pytest.approx(total, abs=1e-6)  # sedi status reprices alike
    with RunStore(tmp_path / "run") as store:
        assert store.spent(Prices(prompt=PROMPT_RATE, completion=COMPLETION_RATE)).cost_usd == pytest.approx(total)

    before = served.counter.total
    again, calls_again, _ = _complete(tmp_path / "run", served.base_url, _prompts(6))
    assert isinstance(again, CompletedRequests) and all(r is not None and r.from_cache for r in again.responses)
    assert served.counter.total == before and len(calls_again) == 6  # answered from the cache: nothing sent


def test_a_discount_other_than_the_default_reaches_the_ledger_and_status(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    prices = {"prompt": PROMPT_RATE, "completion": COMPLETION_RATE, "batch_api_discount": 0.25}
    outcome, calls, _ = _complete(tmp_path / "run", faulty[1].base_url, _prompts(2), prices=prices)
    assert isinstance(outcome, CompletedRequests)
    assert all(r["cost_usd"] == pytest.approx(0.75 * _full_cost(r)) for r in calls)
    assert read_summary(tmp_path / "run")["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in calls), abs=1e-6)
    # The run directory keeps the name the key had before it was renamed (teacher.prices.batch_discount): a run
    # directory written by an earlier version holds this same label, so sedi status prices its rows as above.
    ((label,),) = rows(tmp_path / "run", "SELECT value FROM meta WHERE key = 'prices'")
    assert json.loads(label) == {"prompt": PROMPT_RATE, "completion": COMPLETION_RATE, "batch_discount": 0.25}


@dataclass
class RateLimitedUploads:
    """Answers the first ``refusals`` uploads of a batch input file (POST /v1/files) with a 429 asking to wait 7 s,
    and passes every other request to ``app``."""

    app: Any
    refusals: int

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/files")
        if not upload or self.refusals == 0:
            await self.app(scope, receive, send)
            return
        self.refusals -= 1
        await read_body(receive)
        raw = b'{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}'
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": 429, "headers": [*head, (b"retry-after", b"7")]})
        await send({"type": "http.response.body", "body": raw})


@pytest.mark.parametrize("refusals", [1, 3], ids=["then-accepted", "every-attempt"])
def test_a_rate_limited_upload_waits_the_retry_after_then_succeeds_or_ends_in_the_one_error(
    tmp_path: Path, refusals: int
) -> None:
    server = BatchServer(FaultServer(), step_s=0.02)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # recorded, not slept: the polls' short waits pass as they are
        waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))

    with serve_app(RateLimitedUploads(server.app, refusals)) as served, RunStore(tmp_path / "run") as store:
        settings = {"provider": "openai", "base_url": served.base_url, "batch_api": True, "batch_api_poll_s": 0.01,
                    "max_retries": 2, "backoff_base_s": 0, "free": True}  # fmt: skip
        config = SediConfig.model_validate({"teacher": settings, "budget": {"max_calls": None}})
        budget = Budget(config.budget, store.spent())
        client = TeacherClient(config.teacher, store, budget, lambda: Endpoint(served.base_url, "sk-test"), sleep=sleep)
        requests = [TeacherRequest(prompt=p, max_tokens=16) for p in _prompts(2)]

        async def go() -> CompletedRequests | SediError:
            try:
                return await client.complete_all(requests)
            except SediError as exc:
                return exc
            finally:
                await client.aclose()

        outcome = asyncio.run(go())
    if refusals == 1:
        assert isinstance(outcome, CompletedRequests) and all(r is not None for r in outcome.responses)
        assert waits.count(7.0) == 1 and server.uploads == 1
    else:  # max_retries 2: three attempts, two waits, then the policy's one error
        assert type(outcome) is TeacherError and "\n" not in str(outcome)
        assert "the upload of the batch input file failed 3 attempts, last HTTP 429" in str(outcome)
        assert waits.count(7.0) == 2 and server.uploads == 0
    assert budget.in_flight == 0 and budget.reserved.calls == 0


def test_failed_lines_of_a_partial_job_go_out_again_in_a_later_job(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    server, served = faulty
    server.faults = ["partial"]
    outcome, calls, budget = _complete(tmp_path / "run", served.base_url, _prompts(6))
    assert isinstance(outcome, CompletedRequests) and all(r is not None for r in outcome.responses)
    first, second = server.created
    failed = [r for r in calls if r["batch_id"] == first and r["status"] == "error"]
    assert len(failed) == 3 and all(r["http_status"] == 500 and r["charged_cost_usd"] == 0 for r in failed)
    retried = [r for r in calls if r["batch_id"] == second]
    assert sorted(r["request_key"] for r in retried) == sorted(r["request_key"] for r in failed)
    assert all(r["status"] == "ok" and r["attempt"] == 1 for r in retried) and len(server.lines_by_job[second]) == 3
    assert len(calls) == 9 and budget.spent.calls == 9  # every line is a call, failed ones included
    assert all(n == 1 for n in server.runs.values()) and len(server.runs) == 6  # each request answered once


@pytest.mark.parametrize("fault", ["expired", "failed"])
def test_expired_and_failed_jobs_are_retried_up_to_max_retries(
    tmp_path: Path, faulty: tuple[BatchServer, Served], fault: str
) -> None:
    server, served = faulty
    server.faults = [fault]
    outcome, calls, _ = _complete(tmp_path / "once", served.base_url, _prompts(4), max_retries=1)
    assert isinstance(outcome, CompletedRequests) and all(r is not None for r in outcome.responses)
    assert len(server.created) == 2
    unrun = [r for r in calls if r["batch_id"] == server.created[0] and r["status"] == "error"]
    assert len(unrun) == (2 if fault == "expired" else 4)  # an expired job returns what it finished
    assert all(r["error_class"] == f"batch_{fault}" and r["charged_cost_usd"] == 0 for r in unrun)

    server.faults = [fault, fault]
    outcome, calls, _ = _complete(tmp_path / "twice", served.base_url, _prompts(4), max_retries=1)
    assert isinstance(outcome, TeacherError) and f"batch_{fault}" in str(outcome) and "max_retries" in str(outcome)
    assert len(server.created) == 4 and len(str(outcome).splitlines()) == 1


def test_a_cancelled_job_stops_the_call_and_a_rerun_sends_only_the_rest(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    server, served = faulty
    server.faults = ["cancelled"]
    outcome, calls, budget = _complete(tmp_path / "run", served.base_url, _prompts(4))
    assert isinstance(outcome, TeacherError) and "cancelled outside this run" in str(outcome)
    assert len(server.created) == 1 and budget.reserved.calls == 0
    assert sorted(r["status"] for r in calls) == ["error", "error", "ok", "ok"]
    outcome, calls, _ = _complete(tmp_path / "run", served.base_url, _prompts(4))
    assert isinstance(outcome, CompletedRequests) and all(r is not None for r in outcome.responses)
    assert len(server.created) == 2 and len(server.lines_by_job[server.created[1]]) == 2
    assert all(n == 1 for n in server.runs.values()) and len(server.runs) == 4


def test_the_budget_bounds_what_a_job_carries(tmp_path: Path, faulty: tuple[BatchServer, Served]) -> None:
    server, served = faulty
    outcome, calls, budget = _complete(tmp_path / "calls", served.base_url, _prompts(6), budget={"max_calls": 4})
    assert isinstance(outcome, CompletedRequests) and outcome.budget_stop is not None
    assert outcome.budget_stop.cap == "max_calls" and sum(r is not None for r in outcome.responses) == 4
    assert len(server.created) == 1 and len(server.lines_by_job[server.created[0]]) == 4 and len(calls) == 4

    # A cost cap of two and a half worst cases: each job carries the worst cases that fit, and the next one the
    # room its actual charge left, until a worst case no longer fits with nothing in flight.
    worst = calls[0]["reserved_cost_usd"]
    cap = {"max_calls": None, "max_cost_usd": 2.5 * worst}
    outcome, calls, budget = _complete(tmp_path / "cost", served.base_url, _prompts(6), budget=cap)
    assert isinstance(outcome, CompletedRequests) and outcome.budget_stop is not None
    assert outcome.budget_stop.cap == "max_cost_usd"
    jobs = server.created[1:]
    assert len(server.lines_by_job[jobs[0]]) == 2 and len(jobs) >= 2
    answered = sum(r is not None for r in outcome.responses)
    assert answered == len(calls) > 2  # more than two worst cases at once would allow
    assert budget.spent.cost_usd <= cap["max_cost_usd"] < budget.spent.cost_usd + worst


def test_a_usage_report_above_the_reservation_stops_the_client_and_keeps_the_answer(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    served = faulty[1]
    prompts = [tagged("over_usage", 0), *_prompts(2)]
    outcome, calls, _ = _complete(tmp_path / "run", served.base_url, prompts)
    assert isinstance(outcome, UsageMisreported) and "misreports usage" in str(outcome)
    over = [r for r in calls if r["error_class"] == "UsageOverReservation"]
    assert len(over) == 1 and over[0]["status"] == "ok"
    assert rows(tmp_path / "run", "SELECT COUNT(*) FROM responses") == [(3,)]  # paid for, so cached


def test_a_job_left_running_is_collected_by_the_next_start_even_with_batch_off(
    tmp_path: Path, faulty: tuple[BatchServer, Served]
) -> None:
    server, served = faulty
    server.hold = True
    outcome, calls, budget = _complete(tmp_path / "run", served.base_url, _prompts(3), stop_after_s=1.0)
    assert outcome is None and len(server.created) == 1  # stopped waiting, as a killed process would
    assert [r["status"] for r in calls] == ["sent"] * 3 and budget.in_flight == 0
    with RunStore(tmp_path / "run") as store:  # the next start finds the rows it cannot vouch for
        assert store.recovered_interrupted == 3
        assert store.spent().cost_usd == pytest.approx(sum(r["reserved_cost_usd"] for r in calls))

    server.hold = False
    outcome, calls, budget = _complete(tmp_path / "run", served.base_url, _prompts(3), batch_api=False)
    assert isinstance(outcome, CompletedRequests) and all(r is not None and r.from_cache for r in outcome.responses)
    assert len(server.created) == 1 and served.request_counts["/v1/completions"] == 0  # nothing sent again
    assert all(r["status"] == "ok" and r["batch_id"] == server.created[0] for r in calls) and len(calls) == 3
    assert budget.spent.cost_usd == pytest.approx(sum(r["cost_usd"] for r in calls))  # the worst case given back
    assert budget.reserved.calls == 0 and budget.in_flight == 0


def _job_rows(run_dir: Path) -> list[tuple[Any, ...]]:
    return rows(run_dir, "SELECT state, batch_id, status FROM batch_jobs ORDER BY id")


@pytest.mark.slow
def test_kill_9_while_the_job_is_in_progress_resumes_the_same_job(
    tmp_path: Path, scripted_batch: tuple[BatchServer, Served], tiny_model_dir: Path
) -> None:
    server, served = scripted_batch
    run_dir = tmp_path / "run"
    args = [*scripted_args(run_dir, served, tiny_model_dir), *ONE_ROUND, *BATCH, *PRICES]
    server.hold = True  # the job stays in_progress until released
    proc = subprocess.Popen([sys.executable, "-m", "sedi", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Killed once the run has recorded the job as in_progress. The server's own count of status checks cannot say
    # so: the job turns in_progress on a timer, and a check is counted before its answer is recorded (CI failed so).
    while not (server.created and _job_rows(run_dir) == [("created", server.created[0], "in_progress")]):
        assert time.monotonic() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (batch_id,) = server.created
    assert _job_rows(run_dir) == [("created", batch_id, "in_progress")]
    assert [(r["status"], r["batch_id"]) for r in ledger(run_dir)] == [("sent", batch_id)] * 4

    server.hold = False
    resumed = sedi(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert server.created == [batch_id] and server.uploads == 1  # the same job, never a second one
    assert all(n == 1 for n in server.runs.values()) and len(server.runs) == 4  # each request answered once
    calls = ledger(run_dir)
    assert len(calls) == 4 and all(r["status"] == "ok" and r["batch_id"] == batch_id for r in calls)
    assert all(r["charged_cost_usd"] == pytest.approx(0.5 * _full_cost(r)) for r in calls)  # not the worst case
    assert _job_rows(run_dir) == [("ended", batch_id, "completed")]
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["responses"] == 4 and summary["kept"] > 0
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in calls), abs=1e-6)


@pytest.mark.slow
def test_killed_between_the_create_and_its_record_the_job_is_found_by_its_metadata(
    tmp_path: Path, scripted_batch: tuple[BatchServer, Served], tiny_model_dir: Path
) -> None:
    server, served = scripted_batch
    run_dir = tmp_path / "run"
    args = [*scripted_args(run_dir, served, tiny_model_dir), *ONE_ROUND, *BATCH, *PRICES]
    killed = sedi(*args, crash_at="batch:created")
    assert killed.returncode == -9, killed.stderr
    (batch_id,) = server.created
    assert rows(run_dir, "SELECT state, batch_id FROM batch_jobs") == [("uploaded", None)]  # created, not recorded
    resumed = sedi(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert server.created == [batch_id] and server.uploads == 1 and served.request_counts["/v1/batches"] >= 2
    assert all(r["status"] == "ok" and r["batch_id"] == batch_id for r in ledger(run_dir))
    assert len(server.runs) == 4 and all(n == 1 for n in server.runs.values())


@pytest.mark.slow
def test_a_batch_run_keeps_the_same_tasks_as_a_synchronous_run_at_half_the_price(
    tmp_path: Path, scripted: Served, scripted_batch: tuple[BatchServer, Served], tiny_model_dir: Path
) -> None:
    server, served = scripted_batch
    style = ("--set", "generation.prompt_style=self-instruct", *ONE_ROUND, *PRICES)
    sync = sedi(*scripted_args(tmp_path / "sync", scripted, tiny_model_dir, *style))
    assert sync.returncode == 0, sync.stderr
    batch = sedi(*scripted_args(tmp_path / "batch", served, tiny_model_dir, *style, *BATCH))
    assert batch.returncode == 0, batch.stderr

    def kept(name: str) -> list[dict[str, Any]]:
        tasks = [json.loads(line) for line in (tmp_path / name / "data" / "kept.jsonl").read_text().splitlines()]
        for task in tasks:  # the ledger row that paid for it: numbered in another order in a batch run
            task["provenance"].pop("call_id")
        return tasks

    assert kept("batch") == kept("sync") and len(kept("batch")) > 0
    sync_calls = {r["request_key"]: r for r in ledger(tmp_path / "sync")}
    batch_calls = ledger(tmp_path / "batch")
    kinds = dict(rows(tmp_path / "batch", "SELECT request_key, kind FROM requests"))
    assert {kinds[r["request_key"]] for r in batch_calls} == {"tasks", "classify", "instances"}
    assert len(batch_calls) == len(sync_calls) and all(r["batch_id"] in server.created for r in batch_calls)
    for row in batch_calls:  # the same answers, at half the price
        same = sync_calls[row["request_key"]]
        assert (row["prompt_tokens"], row["completion_tokens"]) == (same["prompt_tokens"], same["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(0.5 * same["cost_usd"])
    assert status(tmp_path / "batch")["cost_usd"] == pytest.approx(
        0.5 * status(tmp_path / "sync")["cost_usd"], abs=2e-6
    )


def test_batch_with_the_embedded_teacher_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = invoke(
        ["run", "--run-dir", str(tmp_path / "run"), "--set", "teacher.batch_api=true"], capsys, monkeypatch
    )
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "teacher.batch_api" in output and "'local'" in output and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_estimate_prices_a_batch_run_at_the_discount(tmp_path: Path, scripted: Served, tiny_model_dir: Path) -> None:
    def estimate(*extra: str) -> dict[str, Any]:
        args = scripted_args(tmp_path / "new", scripted, tiny_model_dir, *PRICES, *extra)[1:]
        result = sedi("estimate", *args, "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    full, batch = estimate(), estimate(*BATCH)
    assert batch["cost_usd_per_call_high"] == pytest.approx(0.5 * full["cost_usd_per_call_high"], abs=1e-6)
    assert batch["cost_usd_per_call_high"] > 0
