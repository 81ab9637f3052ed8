"""Money safety of the real teacher client against a faulty provider, over real HTTP.

Every test runs the real :class:`TeacherClient` (the real openai client) at concurrency 8 against
``tests.fault_server.FaultServer`` on a loopback port, and checks the same invariants:

- the ledger has exactly one row per request the server received, none left 'sent';
- every reservation is settled, and the budget is never exceeded by more than the provider itself
  over-reported (tokens or cost charged beyond a request's reserved worst case);
- no paid response is lost: a rerun of the requests already answered makes zero HTTP requests;
- only sedi's own errors (``sedi.exceptions``) come out.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import SediConfig
from sedi.exceptions import RunDirError, SediError, TeacherError
from sedi.report.summary import summarize
from sedi.store.db import RunStore, Usage
from sedi.store.ledger import cost_text
from sedi.teacher.budget import Budget
from sedi.teacher.client import CompletedRequests, Endpoint, TeacherClient, TeacherRequest, UsageMisreported
from sedi.teacher.outcomes import MAX_CHARS_PER_TOKEN, Malformed, checked_text
from sedi.teacher.retry import MAX_RETRY_AFTER_S
from tests.fault_server import OVER_REPORTED_COMPLETION_TOKENS, FaultServer, answer_text, tagged
from tests.servers import Served, serve_app

CONCURRENCY = 8
PRICES = {"prompt": 2.0, "completion": 8.0}  # USD per million tokens


@pytest.fixture
def server() -> Iterator[tuple[FaultServer, Served]]:
    app = FaultServer(slow_s=1.5)
    with serve_app(app) as served:
        yield app, served


class Run:
    """One start of a run: a store, a budget and a real TeacherClient over HTTP."""

    def __init__(self, run_dir: Path, base_url: str, budget: dict[str, Any] | None = None, **teacher: Any) -> None:
        self.config = SediConfig.model_validate(
            {
                "teacher": {
                    "provider": "openai",
                    "base_url": base_url,
                    "concurrency": CONCURRENCY,
                    "max_retries": 3,
                    "timeout_s": 0.8,
                    "backoff_base_s": 0,
                    "prices": PRICES,
                    **teacher,
                },
                "budget": {"max_calls": None, **(budget or {})},
            }
        )
        self.store = RunStore(run_dir)
        self.budget = Budget(self.config.budget, self.store.spent(self.config.teacher.prices))
        self.waits: list[float] = []

        async def record_wait(seconds: float) -> None:  # waits are checked, not slept
            self.waits.append(seconds)

        self.client = TeacherClient(
            self.config.teacher,
            self.store,
            self.budget,
            lambda: Endpoint(base_url, "sk-test"),
            sleep=record_wait,
        )

    def batch(self, requests: list[TeacherRequest]) -> tuple[CompletedRequests | None, SediError | None]:
        return self.batches(requests)[0]

    def batches(self, *batches: list[TeacherRequest]) -> list[tuple[CompletedRequests | None, SediError | None]]:
        """complete_all on each batch in turn, in one event loop as a run does, with a deadline (a leaked
        reservation would make it wait forever). Anything but a sedi error propagates and fails the test."""

        async def one(requests: list[TeacherRequest]) -> tuple[CompletedRequests | None, SediError | None]:
            try:
                return await asyncio.wait_for(self.client.complete_all(requests), timeout=60), None
            except SediError as exc:
                return None, exc

        async def go() -> list[tuple[CompletedRequests | None, SediError | None]]:
            try:
                return [await one(requests) for requests in batches]
            finally:
                await self.client.aclose()

        return asyncio.run(go())

    def close(self) -> None:
        self.store.close()


def wait_for_server(app: FaultServer, expected: int) -> None:
    # A timed-out request can reach the server a moment after the client gave up on it.
    deadline = time.monotonic() + 5
    while app.requests < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def check_money(run: Run, app: FaultServer) -> list[dict[str, Any]]:
    rows = run.store.ledger()
    wait_for_server(app, len(rows))
    assert len(rows) == app.requests, "every HTTP request has exactly one ledger row"
    assert not [r for r in rows if r["status"] == "sent"], "every attempt that ended is recorded"
    reserved = run.budget.reserved
    assert run.budget.in_flight == 0 and (reserved.calls, reserved.tokens) == (0, 0), "every reservation settled"
    assert reserved.cost_usd == pytest.approx(0.0, abs=1e-12)
    for r in rows:
        assert min(r["prompt_tokens"], r["completion_tokens"], r["charged_tokens"], r["charged_cost_usd"]) >= 0
    spent = run.store.spent(run.config.teacher.prices)
    assert run.budget.spent.calls == spent.calls and run.budget.spent.tokens == spent.tokens
    assert run.budget.spent.cost_usd == pytest.approx(spent.cost_usd)
    over_tokens = sum(max(0, r["charged_tokens"] - r["reserved_tokens"]) for r in rows)
    over_cost = sum(max(0.0, r["charged_cost_usd"] - r["reserved_cost_usd"]) for r in rows)
    caps = run.config.budget
    if caps.max_calls is not None:
        assert spent.calls <= caps.max_calls
    if caps.max_tokens is not None:
        assert spent.tokens <= caps.max_tokens + over_tokens
    if caps.max_cost_usd is not None:
        assert spent.cost_usd <= caps.max_cost_usd + over_cost + 1e-9
    lost = run.store.db.execute(
        "SELECT COUNT(*) FROM calls c WHERE status IN ('ok', 'length') "
        "AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.request_key = c.request_key)"
    ).fetchone()[0]
    assert lost == 0, "every answer received is cached"
    return rows


def rerun_is_free(run_dir: Path, app: FaultServer, base_url: str, requests: list[TeacherRequest]) -> None:
    """A new start answers every already-answered request from the cache, without one HTTP request."""
    before = app.requests
    again = Run(run_dir, base_url)
    result, error = again.batch(requests)
    again.close()
    assert error is None and result is not None
    assert all(r is not None and r.from_cache for r in result.responses)
    assert app.requests == before


def answered(requests: list[TeacherRequest], run: Run) -> list[TeacherRequest]:
    """The requests whose answer is in the cache (returned, or paid for before an error stopped the batch)."""
    return [r for r in requests if run.store.cached(r.key(run.config.teacher.model, run.config.teacher.mode))]


RETRIED = [("429", 1), ("429_bad", 1), ("429_weird", 1), ("500", 2), ("503", 1), ("slow", 1), ("truncated_json", 1)]
ANSWERED_AS_IS = ["ok", "empty_text", "negative_usage", "partial_usage", "empty_usage", "no_usage"]


def mixed_requests(copies: int) -> list[TeacherRequest]:
    prompts = [tagged(f, i, n) for i in range(copies) for f, n in RETRIED]
    prompts += [tagged(f, i) for i in range(copies) for f in ANSWERED_AS_IS]
    requests = [TeacherRequest(prompt=p, max_tokens=16) for p in prompts]
    return requests + requests[:: len(RETRIED)]  # identical requests in the same batch, some of them retried


@pytest.mark.parametrize("weird", ["-5", "1e308", "inf", "nan", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_faults_that_retries_fix_lose_nothing_and_match_the_server(
    tmp_path: Path, server: tuple[FaultServer, Served], weird: str
) -> None:
    app, served = server
    app.weird_retry_after = weird
    run = Run(tmp_path / "run", served.base_url, budget={"max_calls": 500, "max_cost_usd": 1.0})
    requests = mixed_requests(copies=2)
    result, error = run.batch(requests)
    assert error is None and result is not None and result.budget_stop is None
    for request, response in zip(requests, result.responses, strict=True):
        assert response is not None
        expected = "" if "empty_text" in (request.prompt or "") else answer_text(request.prompt or "")
        assert response.text == expected
    rows = check_money(run, app)
    by_key: dict[str, list[int]] = {}
    for row in rows:
        by_key.setdefault(row["request_key"], []).append(row["attempt"])
    assert all(sorted(a) == list(range(len(a))) for a in by_key.values()), "attempts numbered 0, 1, ... per key"
    assert len(by_key) == len({r.prompt for r in requests}), "identical requests were sent once"
    # unknown usage is charged its worst case; negative counts are clamped to zero, and charged nothing
    unknown = [r for r in rows if r["error_class"] == "UsageUnknown"]
    assert len(unknown) == 3 * 2 and all(r["charged_tokens"] == r["reserved_tokens"] for r in unknown)
    teacher = run.config.teacher
    negative = {r.key(teacher.model, teacher.mode) for r in requests if "negative_usage" in (r.prompt or "")}
    clamped = [(r["prompt_tokens"], r["completion_tokens"], r["charged_tokens"], r["charged_cost_usd"]) for r in rows
               if r["request_key"] in negative]  # fmt: skip
    assert len(clamped) == 2 and set(clamped) == {(0, 0, 0, 0.0)}
    assert all(0 <= w <= MAX_RETRY_AFTER_S for w in run.waits)
    run.close()
    rerun_is_free(tmp_path / "run", app, served.base_url, requests)


def test_an_error_storm_stops_sending_and_settles_everything(
    tmp_path: Path, server: tuple[FaultServer, Served]
) -> None:
    app, served = server
    app.default = "503"
    run = Run(tmp_path / "run", served.base_url, max_retries=2)
    requests = [TeacherRequest(prompt=f"Task 1: storm {i}\nTask 2:", max_tokens=16) for i in range(40)]
    _, error = run.batch(requests)
    assert isinstance(error, TeacherError) and "failed 3 attempts" in str(error) and "\n" not in str(error)
    check_money(run, app)
    # the batch stopped at the first failure: only requests already in flight went on
    assert app.requests <= 3 * CONCURRENCY < 3 * len(requests)
    assert summarize(run.store.db, run.store.run_dir)["responses"] == 0
    run.close()


def test_over_reported_usage_is_charged_kept_and_stops_the_run(
    tmp_path: Path, server: tuple[FaultServer, Served]
) -> None:
    app, served = server
    run = Run(tmp_path / "run", served.base_url, budget={"max_tokens": 3000, "max_cost_usd": 0.05})
    prompts = [tagged("ok", i) for i in range(6)] + [tagged("over_usage", 0)] + [tagged("ok", i) for i in range(6, 30)]
    requests = [TeacherRequest(prompt=p, max_tokens=16) for p in prompts]
    later = TeacherRequest(prompt=tagged("ok", 99), max_tokens=16)
    (_, error), (_, after) = run.batches(requests, [later])
    assert isinstance(error, UsageMisreported) and isinstance(error, TeacherError)
    assert "misreports usage" in str(error) and "\n" not in str(error)
    assert isinstance(after, UsageMisreported), "the client sends nothing more"
    rows = check_money(run, app)
    assert later.key(run.config.teacher.model, run.config.teacher.mode) not in {r["request_key"] for r in rows}
    over = [r for r in rows if r["error_class"] == "UsageOverReservation"]
    assert over and all(r["completion_tokens"] == OVER_REPORTED_COMPLETION_TOKENS for r in over)
    assert all(r["charged_tokens"] == r["prompt_tokens"] + r["completion_tokens"] for r in over)
    assert run.store.spent().tokens > 3000, "charged what the provider says, even past the cap"
    assert run.store.cached(over[0]["request_key"]) is not None, "the over-reported answer is kept"
    assert app.requests < len(requests), "the run stopped sending"
    assert summarize(run.store.db, run.store.run_dir)["usage_over_reservation_calls"] == len(over)
    done = answered(requests, run)
    run.close()
    rerun_is_free(tmp_path / "run", app, served.base_url, done)


@pytest.mark.parametrize("cap", [{"max_tokens": 700}, {"max_cost_usd": 0.002}, {"max_calls": 20}])
def test_caps_hold_under_faults_and_cached_answers_still_come_back(
    tmp_path: Path, server: tuple[FaultServer, Served], cap: dict[str, Any]
) -> None:
    app, served = server
    run = Run(tmp_path / "run", served.base_url, budget=cap)
    requests = mixed_requests(copies=2)
    (first, error), (result, error_after) = run.batches(requests[:6], requests)
    assert error is None and first is not None
    error = error_after
    assert error is None and result is not None and result.budget_stop is not None
    check_money(run, app)
    returned = {i for i, r in enumerate(result.responses) if r is not None}
    assert set(range(6)) <= returned, "requests answered before the budget stop still come back from the cache"
    done = answered(requests, run)
    assert {requests[i] for i in returned} <= set(done)
    run.close()
    rerun_is_free(tmp_path / "run", app, served.base_url, done)


def test_an_impossible_completion_is_charged_recorded_retried_and_never_kept(
    tmp_path: Path, server: tuple[FaultServer, Served]
) -> None:
    app, served = server
    run = Run(tmp_path / "run", served.base_url)
    # 1 MB under a 384-token cap, usage claiming 384 tokens: once for each of 8 prompts (then answered), always for one
    requests = [TeacherRequest(prompt=tagged("huge_text", i, 1), max_tokens=384) for i in range(8)]
    stubborn = TeacherRequest(prompt=tagged("huge_text", 99), max_tokens=384)
    (result, error), (_, failed) = run.batches(requests, [stubborn])
    assert error is None and result is not None
    assert [r.text if r else None for r in result.responses] == [answer_text(q.prompt or "") for q in requests]
    error = failed
    assert isinstance(error, TeacherError) and "MalformedResponse" in str(error) and "\n" not in str(error)
    rows = check_money(run, app)
    refused = [r for r in rows if r["error_class"] == "MalformedResponse"]
    assert len(refused) == 8 + 4 == app.by_fault["huge_text"]  # max_retries 3: four attempts for the stubborn one
    assert all(r["http_status"] == 200 and r["charged_tokens"] == r["reserved_tokens"] > 384 for r in refused)
    assert all("under max_tokens 384" in r["error"] for r in refused)
    longest = run.store.db.execute("SELECT MAX(LENGTH(text)) FROM responses").fetchone()[0]
    assert longest < 100, "nothing of a refused completion is cached"
    assert run.store.cached(stubborn.key(run.config.teacher.model, run.config.teacher.mode)) is None
    run.close()


def test_the_length_bound_is_32_characters_per_token_and_1024_more() -> None:
    limit = MAX_CHARS_PER_TOKEN * 16 + 1024
    assert MAX_CHARS_PER_TOKEN == 32 and checked_text("z" * limit, 16) == "z" * limit  # at the bound: kept
    with pytest.raises(Malformed, match="under max_tokens 16"):
        checked_text("z" * (limit + 1), 16)


def test_a_response_without_usage_reports_at_most_its_charge_never_zero(
    tmp_path: Path, server: tuple[FaultServer, Served]
) -> None:
    app, served = server
    app.default = "no_usage"
    run = Run(tmp_path / "run", served.base_url)
    requests = [TeacherRequest(prompt=f"Task 1: quiet {i}\nTask 2:", max_tokens=64) for i in range(5)]
    _, error = run.batch(requests)
    assert error is None
    check_money(run, app)
    summary = summarize(run.store.db, run.store.run_dir)
    charged = run.budget.spent.cost_usd
    assert charged > 0 and summary["cost_usd"] == pytest.approx(charged, abs=1e-6)
    assert summary["cost_known"] is False and summary["cost_upper_bound"] is True
    assert summary["cost_reported_usd"] == 0.0 and summary["unreported_usage_calls"] == 5
    assert summary["usd_per_kept"] is None  # nothing kept here; with kept tasks it divides the same upper bound
    assert cost_text(summary).startswith(f"at most ${charged:,.4f}")
    run.close()
    app.default = "ok"  # one known answer more does not make the total exact
    again = Run(tmp_path / "run", served.base_url)
    again.batch([TeacherRequest(prompt="Task 1: loud\nTask 2:", max_tokens=64)])
    after = summarize(again.store.db, again.store.run_dir)
    assert after["cost_upper_bound"] is True and after["cost_usd"] > summary["cost_usd"]
    again.close()


def test_a_full_disk_settles_every_reservation_and_stops(tmp_path: Path, server: tuple[FaultServer, Served]) -> None:
    app, served = server
    app.pad_text = 20_000  # each answer needs new database pages
    run = Run(tmp_path / "run", served.base_url)
    pages = run.store.db.execute("PRAGMA page_count").fetchone()[0]
    run.store.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # room for ledger rows, not for answers
    # max_tokens leaves room for the padded answers: 20,000 characters under 16 tokens would be refused as implausible
    requests = [TeacherRequest(prompt=tagged("ok", i), max_tokens=1024) for i in range(30)]
    _, error = run.batch(requests)
    assert isinstance(error, RunDirError) and "cannot write the call ledger" in str(error)
    assert "\n" not in str(error)
    assert run.budget.in_flight == 0 and (run.budget.reserved.calls, run.budget.reserved.tokens) == (0, 0)
    rows = run.store.ledger()
    wait_for_server(app, len(rows))
    assert len(rows) == app.requests <= CONCURRENCY, "nothing more was sent once the ledger failed"
    run.close()
    reopened = RunStore(tmp_path / "run")  # the unrecorded outcomes are charged their worst case
    assert reopened.recovered_interrupted == len([r for r in rows if r["status"] == "sent"]) > 0
    assert reopened.spent().tokens >= sum(r["reserved_tokens"] for r in rows if r["status"] == "sent")
    reopened.close()


def test_a_failing_ledger_insert_sends_nothing(tmp_path: Path, server: tuple[FaultServer, Served]) -> None:
    app, served = server
    run = Run(tmp_path / "run", served.base_url)
    run.store.db.execute(
        "CREATE TEMP TRIGGER no_room BEFORE INSERT ON calls BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    _, error = run.batch([TeacherRequest(prompt=tagged("ok", i), max_tokens=16) for i in range(20)])
    assert isinstance(error, RunDirError)
    assert app.requests == 0 and run.store.ledger() == []
    assert run.budget.in_flight == 0 and run.budget.spent == Usage()
    run.close()


@pytest.mark.slow
def test_a_paid_teacher_without_prices_is_refused_before_the_run_dir_is_touched(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = ["--set", "teacher.provider=openai", "--set", "teacher.base_url=https://api.example.invalid/v1"]
    env = {**os.environ, "SEDI_TEST_KEY": "sk-test-not-a-real-key"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sedi",
            "run",
            "--run-dir",
            str(run_dir),
            *base,
            "--set",
            "teacher.api_key_env=SEDI_TEST_KEY",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    # one line, no blank line before it, naming the key and the fix
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "teacher.prices" in result.stderr and "teacher.free" in result.stderr
    assert not run_dir.exists()
