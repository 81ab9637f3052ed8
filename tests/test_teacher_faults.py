"""Teacher client faults through the real openai client over a mock transport (no network).

Each fault must be retried or recorded as designed, never crash the process with an unclassified
error, and leave exactly one ledger row per HTTP attempt. A fault that the fault server of
tests/test_money_safety.py produces (over- and under-reported usage, negative counts, impossible
completions, odd Retry-After headers, identical requests, a failing ledger, budget stops) is tested
there only, over real HTTP at concurrency 8; here are the faults it does not produce and the exact
waits, charges and messages of one request. The retry policy itself: tests/test_retry.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from sedi.config.model import SediConfig
from sedi.exceptions import TeacherError, TeacherUnreachable
from sedi.report.summary import summarize
from sedi.store.db import RunStore, Usage
from sedi.teacher.budget import Budget
from sedi.teacher.client import Endpoint, TeacherClient, TeacherRequest

Handler = Callable[[httpx2.Request], httpx2.Response]


def completion_body(text: str = "Task 2: Say hi.", finish: str = "stop", usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    return body


class Harness:
    def __init__(self, tmp_path: Path, handler: Handler, **teacher: Any) -> None:
        budget = teacher.pop("budget", {})
        self.config = SediConfig.model_validate(
            {
                "teacher": {"provider": "openai", "base_url": "http://teacher.test/v1", "max_retries": 3, **teacher},
                "budget": budget,
            }
        )
        self.store = RunStore(tmp_path / "run")
        self.sleeps: list[float] = []
        self.requests: list[httpx2.Request] = []

        def counting(request: httpx2.Request) -> httpx2.Response:
            self.requests.append(request)
            return handler(request)

        async def fake_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.client = TeacherClient(
            self.config.teacher,
            self.store,
            Budget(self.config.budget, self.store.spent()),
            lambda: Endpoint("http://teacher.test/v1", "sk-test"),
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(counting)),
            sleep=fake_sleep,
        )

    def complete(self, request: TeacherRequest | None = None) -> Any:
        return asyncio.run(self.client.complete(request or TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16)))

    def ledger(self) -> list[dict[str, Any]]:
        return self.store.ledger()


def sequence(*responses: Callable[[], httpx2.Response]) -> Handler:
    """A handler answering each request with the next item (the last one repeats)."""
    items = list(responses)

    def handler(_: httpx2.Request) -> httpx2.Response:
        return items.pop(0)() if len(items) > 1 else items[0]()

    return handler


def test_429_with_retry_after_is_honoured_then_succeeds(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        sequence(
            lambda: httpx2.Response(429, headers={"retry-after": "3"}, json={"error": {"message": "slow down"}}),
            lambda: httpx2.Response(200, json=completion_body()),
        ),
    )
    response = h.complete()
    assert response.text == "Task 2: Say hi."
    assert h.sleeps == [3.0]
    rows = h.ledger()
    assert [(r["status"], r["http_status"], r["attempt"]) for r in rows] == [("error", 429, 0), ("ok", 200, 1)]
    assert rows[0]["error_class"] == "RateLimitError"
    assert rows[1]["prompt_tokens"] == 11 and rows[1]["completion_tokens"] == 7


def test_500_is_retried_with_jittered_exponential_backoff(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        sequence(
            lambda: httpx2.Response(500, json={"error": {"message": "boom"}}),
            lambda: httpx2.Response(503, json={"error": {"message": "busy"}}),
            lambda: httpx2.Response(200, json=completion_body()),
        ),
        backoff_base_s=1.0,
    )
    h.complete()
    assert [r["http_status"] for r in h.ledger()] == [500, 503, 200]
    assert len(h.sleeps) == 2
    assert 0 <= h.sleeps[0] <= 1.0 and 0 <= h.sleeps[1] <= 2.0


def test_timeout_is_retried_and_charged_its_worst_case(tmp_path: Path) -> None:
    def raise_timeout() -> httpx2.Response:
        raise httpx2.ReadTimeout("read timed out")

    h = Harness(tmp_path, sequence(raise_timeout, lambda: httpx2.Response(200, json=completion_body())))
    h.complete()
    first, second = h.ledger()
    assert first["error_class"] == "APITimeoutError" and first["status"] == "error"
    # The server may have served a timed-out request: the budget charges what was reserved.
    assert first["charged_tokens"] == first["reserved_tokens"] > 16
    assert second["charged_tokens"] == 18


@pytest.mark.parametrize(
    "body",
    [b'{"id": "x", "choices": [{"text": "hi"', b"<html>proxy error</html>", b'{"unexpected": true}'],
    ids=["cut-json", "html", "wrong-shape"],
)
def test_malformed_bodies_are_retried_then_reported(tmp_path: Path, body: bytes) -> None:
    h = Harness(
        tmp_path,
        lambda _: httpx2.Response(200, content=body, headers={"content-type": "application/json"}),
        max_retries=2,
    )
    with pytest.raises(TeacherError, match=r"failed 3 attempts.*MalformedResponse"):
        h.complete()
    rows = h.ledger()
    assert len(rows) == len(h.requests) == 3
    assert {r["error_class"] for r in rows} == {"MalformedResponse"}
    assert h.store.cached(rows[0]["request_key"]) is None


def test_truncated_output_is_recorded_and_cached(tmp_path: Path) -> None:
    h = Harness(tmp_path, lambda _: httpx2.Response(200, json=completion_body("Task 2: A cut", finish="length")))
    response = h.complete()
    assert response.truncated
    (row,) = h.ledger()
    assert row["status"] == "length" and row["finish_reason"] == "length"
    assert h.store.cached(row["request_key"]) is not None


def test_auth_error_is_not_retried_and_names_the_fix(tmp_path: Path) -> None:
    h = Harness(tmp_path, lambda _: httpx2.Response(401, json={"error": {"message": "bad key"}}))
    with pytest.raises(TeacherError, match=r"OPENAI_API_KEY \(teacher.api_key_env\)"):
        h.complete()
    assert len(h.ledger()) == len(h.requests) == 1


@pytest.mark.parametrize(
    ("failure", "raised", "status", "calls"),
    [
        # Nothing left the machine: on record, but not calls, for the budget or any report (nor after a resume).
        (httpx2.ConnectError("connection refused"), r"unreachable at http://teacher.test/v1 after 3", "refused", 0),
        # Connected, then no answer: it may have been served and billed, so each is a call at its worst case.
        (httpx2.ReadTimeout("no answer"), r"failed 3 attempts", "error", 3),
    ],
    ids=["refused", "timeout"],
)
def test_a_refused_connection_is_not_a_call_and_a_timeout_is(
    tmp_path: Path, failure: Exception, raised: str, status: str, calls: int
) -> None:
    def fail(_: httpx2.Request) -> httpx2.Response:
        raise failure

    h = Harness(tmp_path, fail, max_retries=2)
    with pytest.raises(TeacherUnreachable if status == "refused" else TeacherError, match=raised):
        h.complete()
    rows = h.ledger()
    worst = 0 if status == "refused" else rows[0]["reserved_tokens"]
    assert len(rows) == 3 and all(r["status"] == status and r["charged_tokens"] == worst for r in rows)
    assert h.client.budget.spent.calls == calls and h.store.spent().calls == calls
    summary = summarize(h.store.db, h.store.run_dir)
    assert summary["calls"] == calls and summary["refused_attempts"] == 3 - calls
    assert summary["failed_calls"] == calls


def test_refusals_recorded_as_errors_by_older_sedi_are_not_calls_once_the_run_is_opened(tmp_path: Path) -> None:
    answers = iter([httpx2.ConnectError("refused"), httpx2.ConnectError("refused"), httpx2.ReadTimeout("no answer")])

    def fail(_: httpx2.Request) -> httpx2.Response:
        raise next(answers)

    h = Harness(tmp_path, fail, max_retries=2)
    with pytest.raises(TeacherError):
        h.complete()
    run_dir = h.store.run_dir
    h.store.close()
    db = sqlite3.connect(run_dir / "sedi.db")
    with db:  # what sedi before 2026-12-07 wrote for a refused connection: an error, one call, no token
        db.execute("UPDATE calls SET status = 'error' WHERE status = 'refused'")
    db.close()
    with RunStore(run_dir) as store:
        rows = store.ledger()
        assert [r["status"] for r in rows] == ["refused", "refused", "error"]
        assert rows[2]["charged_tokens"] == rows[2]["reserved_tokens"] > 0  # sent, maybe billed: still a call
        assert store.spent().calls == 1 and summarize(store.db, run_dir)["refused_attempts"] == 2


def test_cache_key_covers_what_changes_the_answer_and_nothing_else(tmp_path: Path) -> None:
    h = Harness(tmp_path, lambda _: httpx2.Response(200, json=completion_body()))
    base = TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16, temperature=0.7, sample_index=0)
    h.complete(base)
    h.complete(TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16, temperature=0.7, sample_index=0, tag="t"))
    assert len(h.requests) == 1  # the tag is a label, not part of the request
    for variant in (
        TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16, temperature=0.9, sample_index=0),
        TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16, temperature=0.7, sample_index=1),
        TeacherRequest(prompt="Task 1: y\nTask 2:", max_tokens=16, temperature=0.7, sample_index=0),
        TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=17, temperature=0.7, sample_index=0),
    ):
        h.complete(variant)
    assert len(h.requests) == 5
    assert summarize(h.store.db, h.store.run_dir)["cache_hits"] == 1
    sent = json.loads(h.requests[-1].content)
    assert sent["max_tokens"] == 17 and sent["prompt"] == "Task 1: x\nTask 2:"


def test_concurrency_is_not_part_of_the_cache_key(tmp_path: Path) -> None:
    request = TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=16)
    first = Harness(tmp_path, lambda _: httpx2.Response(200, json=completion_body()), concurrency=1)
    first.complete(request)
    first.store.close()
    second = Harness(tmp_path, lambda _: httpx2.Response(200, json=completion_body()), concurrency=16)
    assert second.complete(request).from_cache
    assert second.requests == []


def _slow_ok(delay: float) -> Any:
    async def handler(_: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(delay)
        return httpx2.Response(200, json=completion_body())

    return handler


@pytest.mark.parametrize(
    ("budget", "expected_calls"),
    [({"max_calls": 5}, 5), ({"max_tokens": 3 * 120}, None)],
    ids=["calls", "tokens"],
)
def test_hard_cap_holds_with_many_requests_in_flight(
    tmp_path: Path, budget: dict[str, int], expected_calls: int | None
) -> None:
    h = Harness(tmp_path, _slow_ok(0.05), concurrency=8, budget=budget)  # type: ignore[arg-type]
    requests = [TeacherRequest(prompt=f"Task 1: item {i}\nTask 2:", max_tokens=40, sample_index=i) for i in range(20)]
    result = asyncio.run(h.client.complete_all(requests))
    assert result.budget_stop is not None
    rows = h.ledger()
    assert len(rows) == len(h.requests)
    spent = h.store.spent()
    if expected_calls is not None:
        assert len(h.requests) == expected_calls
    else:
        assert 1 <= len(h.requests) < 20
        assert spent.tokens <= budget["max_tokens"]
        # the run did not stop early: what is left cannot cover one more worst case
        worst = max(r["reserved_tokens"] for r in rows)
        assert budget["max_tokens"] - spent.tokens < worst
        assert len(h.requests) > budget["max_tokens"] // worst  # waiting for settlements freed room
    assert sum(r is not None for r in result.responses) == len(h.requests)


# -- money-safety review findings ------------------------------------------------------------------


def _usage_body(usage: Any) -> dict[str, Any]:
    body = completion_body(usage=False)
    body["usage"] = usage
    return body


# usage {} and {"prompt_tokens": ...} alone come from the fault server (tests/test_money_safety.py)
@pytest.mark.parametrize("usage", [{"completion_tokens": 7}, {"prompt_tokens": "many", "completion_tokens": 7}])
def test_empty_or_partial_usage_keeps_the_text_and_charges_the_worst_case(tmp_path: Path, usage: Any) -> None:
    h = Harness(tmp_path, lambda _: httpx2.Response(200, json=_usage_body(usage)))
    response = h.complete()
    assert response.text == "Task 2: Say hi."
    (row,) = h.ledger()
    assert row["status"] == "ok" and row["error_class"] == "UsageUnknown"
    assert row["charged_tokens"] == row["reserved_tokens"]
    assert h.store.cached(row["request_key"]) is not None
    assert len(h.requests) == 1


def test_attempt_numbers_are_assigned_at_insert(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        ids = [store.begin_attempt("k", 0, "m", "completions", Usage(1, 10)) for _ in range(3)]
        assert [r["attempt"] for r in store.ledger()] == [0, 1, 2] and len(set(ids)) == 3


def test_a_run_without_prices_is_repriced_when_prices_are_given(tmp_path: Path) -> None:
    h = Harness(tmp_path, lambda _: httpx2.Response(200, json=completion_body()))
    h.complete()
    summary = summarize(h.store.db, h.store.run_dir)
    assert summary["cost_known"] is False and summary["cost_usd"] is None  # no prices: unknown, not $0
    h.store.close()
    priced = Harness(
        tmp_path, lambda _: httpx2.Response(200, json=completion_body()), prices={"prompt": 1.0, "completion": 2.0}
    )
    # 11 prompt + 7 completion tokens at $1 / $2 per million, not $0
    assert priced.client.budget.spent.cost_usd == pytest.approx(25e-6)
    summary = summarize(priced.store.db, priced.store.run_dir)
    assert summary["cost_known"] is True and summary["cost_usd"] == pytest.approx(25e-6)


def test_a_drain_lets_the_requests_in_flight_finish_and_sends_nothing_more(tmp_path: Path) -> None:
    h: Harness
    sent_at_drain: list[int] = []

    async def ok_then_interrupted(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0.05)
        if h.client.in_flight == 2 and not h.client.draining:  # Ctrl-C while two requests are at the server
            h.client.drain()
            sent_at_drain.append(len(h.requests))
        await asyncio.sleep(0.05)
        return httpx2.Response(200, json=completion_body())

    h = Harness(tmp_path, ok_then_interrupted, concurrency=2)
    requests = [TeacherRequest(prompt=f"Task 1: item {i}\nTask 2:", max_tokens=40, sample_index=i) for i in range(8)]
    with pytest.raises(KeyboardInterrupt, match="requests in flight had finished"):
        asyncio.run(h.client.complete_all(requests))
    rows = h.ledger()
    assert len(h.requests) == len(rows) == sent_at_drain[0] < 8  # nothing sent after the drain
    assert {r["status"] for r in rows} == {"ok"}  # the two in flight were answered, not abandoned
    assert all(h.store.cached(r["request_key"]) is not None for r in rows)  # and kept for the resume
    assert h.client.in_flight == 0
