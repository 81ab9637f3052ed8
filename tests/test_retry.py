"""The teacher's one retry policy (sedi.teacher.retry), tested directly; the synchronous path's use of it over a mock
transport is in tests/test_teacher_faults.py, over real HTTP in tests/test_money_safety.py, and the Batch API's in
tests/test_batch_api.py."""

from __future__ import annotations

import random

import httpx2
import pytest

from sedi.config.model import SediConfig
from sedi.exceptions import TeacherError, TeacherUnreachable
from sedi.teacher.retry import JOB_LINE, MAX_RETRY_AFTER_S, RetryPolicy, retry_after, retryable_status


def policy(seed: int = 0, **teacher: float) -> RetryPolicy:
    config = SediConfig.model_validate({"teacher": {"max_retries": 3, **teacher}}).teacher
    return RetryPolicy.of(config, random.Random(seed))


@pytest.mark.parametrize(("asked", "waited"), [(3.0, 3.0), (0.0, 0.0), (-5.0, 0.0), (1e9, MAX_RETRY_AFTER_S)])
def test_a_server_wait_is_honoured_within_bounds(asked: float, waited: float) -> None:
    assert policy(backoff_base_s=1.0).delay(0, asked) == waited
    assert policy(backoff_base_s=1.0).delay(5, asked) == waited  # whatever the retry number


def test_without_a_server_wait_the_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    p = policy(seed=7, backoff_base_s=0.5, backoff_max_s=3.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        waits = [p.delay(retry) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling  # spread over the range, not fixed
    # seeded: the same seed gives the same waits, another seed others
    first, second = policy(seed=7), policy(seed=7)
    assert [first.delay(3) for _ in range(3)] == [second.delay(3) for _ in range(3)]
    assert policy(seed=7, backoff_base_s=1.0).delay(3) != policy(seed=8, backoff_base_s=1.0).delay(3)


def test_an_unusable_server_wait_falls_back_to_the_backoff() -> None:
    assert policy(backoff_base_s=0).delay(2, float("nan")) == 0.0
    assert policy(backoff_base_s=0).delay(2, None) == 0.0


def test_a_huge_retry_number_does_not_overflow() -> None:
    assert 0 <= policy(backoff_base_s=600, backoff_max_s=3600).delay(100_000) <= 3600


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("30s", None),
        ("-5", 0.0),
        ("1e308", 600.0),
        ("inf", 600.0),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
        ("", None),
    ],
)
def test_retry_after_parsing_never_raises(header: str, expected: float | None) -> None:
    assert retry_after(httpx2.Response(429, headers={"retry-after": header})) == expected


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after(httpx2.Response(429, headers={"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert retry_after(None) is None


@pytest.mark.parametrize(("status", "retryable"), [(408, True), (409, True), (429, True), (500, True), (503, True),
                                                   (400, False), (401, False), (404, False), (422, False)])  # fmt: skip
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert retryable_status(status) is retryable


def test_exhaustion_is_one_error_naming_the_attempts_the_last_failure_and_the_fix() -> None:
    p = policy()
    down = p.exhausted("http://t/v1", "APIConnectionError: refused", unreachable=True)
    assert type(down) is TeacherUnreachable and "after 4 attempts (APIConnectionError: refused)" in str(down)
    failed = p.exhausted("http://t/v1", "InternalServerError: boom", unreachable=False)
    assert type(failed) is TeacherError and "failed 4 attempts, last InternalServerError: boom" in str(failed)
    assert "teacher.max_retries" in str(failed)
    step = p.exhausted("http://t/v1", "HTTP 503: busy", unreachable=False, step="upload of the batch input file")
    assert type(step) is TeacherError and "the upload of the batch input file failed 4 attempts" in str(step)
    assert "batch job is kept" in str(step)
    line = p.exhausted("http://t/v1", "BatchLineError: busy", unreachable=False, step=JOB_LINE)
    assert type(line) is TeacherError and "after up to 4 jobs" in str(line)
    for error in (down, failed, step, line):
        assert "\n" not in str(error)
    with pytest.raises(TeacherUnreachable):
        raise down
