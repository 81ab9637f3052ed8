"""Rate limits (teacher.rpm, teacher.tpm, the provider's x-ratelimit-* headers) against a server that enforces them.

The real TeacherClient (the real openai client) at concurrency 32 runs against ``tests.fault_server.FaultServer``
behind ``tests.rate_limit_server.RateLimited`` on a loopback port: N requests (or T tokens) per 2 s window, 429
beyond it. The client's own window is shortened to the server's 2 s (``rate_window_s``), so "per minute" here
means per 2 s. The server counts what it admitted and refused, independently of the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import SediConfig, load_config
from sedi.exceptions import ConfigError
from sedi.stages.resume import changed_settings
from sedi.store.db import RunStore
from sedi.teacher.budget import Budget
from sedi.teacher.client import Endpoint, TeacherClient, TeacherRequest
from sedi.teacher.ratelimit import RateLimiter, parse_duration
from tests.fault_server import FaultServer, answer_text
from tests.rate_limit_server import RateLimited
from tests.servers import Served, serve_app

WINDOW_S = 2.0
PER_WINDOW = 12


@contextlib.contextmanager
def limited(**limits: Any) -> Iterator[tuple[RateLimited, Served]]:
    app = RateLimited(FaultServer(), window_s=WINDOW_S, **limits)
    with serve_app(app) as served:
        yield app, served


@pytest.fixture
def requests_limited() -> Iterator[tuple[RateLimited, Served]]:
    with limited(requests=PER_WINDOW) as running:
        yield running


@pytest.fixture
def requests_limited_quietly() -> Iterator[tuple[RateLimited, Served]]:
    with limited(requests=PER_WINDOW, headers=False) as running:
        yield running


def client(run_dir: Path, base_url: str, window_s: float = WINDOW_S, **teacher: Any) -> TeacherClient:
    config = SediConfig.model_validate(
        {
            "teacher": {
                "provider": "openai",
                "base_url": base_url,
                "concurrency": 32,
                "max_retries": 6,
                "timeout_s": 20,
                "prices": {"prompt": 2.0, "completion": 8.0},
                **teacher,
            },
            "budget": {"max_calls": None},
        }
    )
    store = RunStore(run_dir)
    budget = Budget(config.budget, store.spent(config.teacher.prices))
    return TeacherClient(config.teacher, store, budget, lambda: Endpoint(base_url, "sk-test"), rate_window_s=window_s)


def prompts(n: int) -> list[TeacherRequest]:
    return [TeacherRequest(prompt=f"Task 1: item {i}\nTask 2:", max_tokens=16) for i in range(n)]


def run_all(teacher: TeacherClient, requests: list[TeacherRequest], timeout: float = 50) -> float:
    """complete_all with a deadline; checks every answer and every reservation; returns the seconds it took."""

    async def go() -> Any:
        try:
            return await asyncio.wait_for(teacher.complete_all(requests), timeout)
        finally:
            await teacher.aclose()

    started = time.monotonic()
    result = asyncio.run(go())
    took = time.monotonic() - started
    assert result.budget_stop is None
    assert [r.text if r else None for r in result.responses] == [answer_text(q.prompt or "") for q in requests]
    budget = teacher.budget
    assert budget.in_flight == 0 and (budget.reserved.calls, budget.reserved.tokens) == (0, 0)
    return took


def check_ledger(teacher: TeacherClient, app: RateLimited) -> None:
    rows = teacher.store.ledger()
    assert len(rows) == app.admitted + app.refused, "one ledger row per HTTP request the server saw"
    assert sum(r["http_status"] == 429 for r in rows) == app.refused
    assert teacher.budget.spent.calls == len(rows), "waiting for a limit spends nothing"
    assert not [r for r in rows if r["status"] == "sent"]


@pytest.mark.slow
def test_the_provider_headers_slow_a_run_at_concurrency_32_down_before_the_limit(
    tmp_path: Path, requests_limited: tuple[RateLimited, Served]
) -> None:
    app, served = requests_limited
    teacher = client(tmp_path / "run", served.base_url)  # no teacher.rpm: only the headers tell the limit
    requests = prompts(4 * PER_WINDOW)
    took = run_all(teacher, requests)
    assert app.refused <= 3, f"{app.refused} requests met a 429"
    assert app.admitted == len(requests)
    assert took >= 2 * WINDOW_S  # four windows' worth of requests: it waited for resets
    check_ledger(teacher, app)
    teacher.store.close()


@pytest.mark.slow
def test_teacher_rpm_keeps_a_run_at_concurrency_32_under_the_limit(
    tmp_path: Path, requests_limited_quietly: tuple[RateLimited, Served]
) -> None:
    app, served = requests_limited_quietly  # no x-ratelimit headers: only teacher.rpm holds the run back
    teacher = client(tmp_path / "run", served.base_url, rpm=PER_WINDOW)
    requests = prompts(3 * PER_WINDOW)
    run_all(teacher, requests)
    assert app.refused == 0 and app.admitted == len(requests)
    check_ledger(teacher, app)
    teacher.store.close()


@pytest.mark.slow
def test_teacher_tpm_counts_the_reserved_worst_case_and_keeps_under_the_limit(tmp_path: Path) -> None:
    # The server counts prompt bytes plus max_tokens (38 per request): 400 admits 10 per window; the client
    # counts its reservation (more than the server), so it sends fewer and never meets a 429.
    with limited(requests=1000, tokens=400, headers=False) as (app, served):
        teacher = client(tmp_path / "run", served.base_url, tpm=400)
        requests = prompts(20)
        run_all(teacher, requests)
        assert app.refused == 0 and app.admitted == len(requests)
        check_ledger(teacher, app)
        teacher.store.close()


@pytest.mark.slow
def test_a_request_waiting_for_the_limit_then_cancelled_sent_and_spent_nothing(
    tmp_path: Path, requests_limited_quietly: tuple[RateLimited, Served]
) -> None:
    app, served = requests_limited_quietly
    teacher = client(tmp_path / "run", served.base_url, window_s=600, rpm=1)  # the second request waits 10 min
    with pytest.raises(TimeoutError):
        run_all(teacher, prompts(2), timeout=3)
    assert app.admitted == 1 and app.refused == 0
    (row,) = teacher.store.ledger()
    assert row["status"] == "ok", "no ledger row for the request that never left"
    budget = teacher.budget
    assert budget.in_flight == 0 and (budget.reserved.calls, budget.reserved.tokens) == (0, 0)
    assert budget.spent.calls == 1
    teacher.store.close()


def test_the_provider_headers_hold_requests_until_the_reset() -> None:
    limiter = RateLimiter(None, None, read_headers=True)
    order: list[str] = []

    async def one(name: str, headers: dict[str, str]) -> None:
        async with limiter.slot(10) as slot:
            order.append(f"{name} sent")
            slot.sent = True
            await asyncio.sleep(0.05)
            slot.headers = headers
        order.append(f"{name} answered")

    async def go() -> float:
        # the first response says nothing is left until a reset in 300 ms: the second waits for it
        low = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
        first = asyncio.create_task(one("first", low))
        await asyncio.sleep(0)
        started = time.monotonic()
        await asyncio.gather(first, one("second", {}))
        return time.monotonic() - started

    took = asyncio.run(go())
    # until the first response shows whether the provider sends headers, one request at a time
    assert order == ["first sent", "first answered", "second sent", "second answered"]
    assert took >= 0.3


def test_a_request_larger_than_tpm_goes_alone_instead_of_waiting_forever() -> None:
    limiter = RateLimiter(None, 100, read_headers=False, window_s=0.3)

    async def go() -> float:
        async with limiter.slot(1000) as slot:  # larger than the whole window: it still goes, alone
            slot.sent = True
        started = time.monotonic()
        async with limiter.slot(5):  # waits for the big one to leave the window
            return time.monotonic() - started

    assert asyncio.run(go()) >= 0.25


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 600.0),  # capped, as Retry-After is
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("1.5", 1.5),
        ("500us", 0.0005),
        ("0s", 0.0),
        ("-1s", None),
        ("-3", 0.0),
        ("inf", 600.0),
        ("nan", None),
        ("soon", None),
        ("1x", None),
        ("s", None),
        ("", None),
        (None, None),
    ],
)
def test_header_durations_parse_openai_format_and_never_raise(header: str | None, seconds: float | None) -> None:
    parsed = parse_duration(header)
    assert parsed == (None if seconds is None else pytest.approx(seconds))


def test_rpm_and_tpm_are_checked_documented_and_may_change_on_resume() -> None:
    for key in ("teacher.rpm=0", "teacher.tpm=-5"):
        with pytest.raises(ConfigError, match=f"field '{key.split('=')[0]}'"):
            load_config(None, [key])
    assert (SediConfig().teacher.rpm, SediConfig().teacher.tpm) == (None, None)  # no client-side limit
    before = SediConfig().model_dump(mode="json")
    assert changed_settings(before, load_config(None, ["teacher.rpm=500", "teacher.tpm=200000"])) == []
