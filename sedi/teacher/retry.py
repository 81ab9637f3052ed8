"""The teacher's one retry policy, for synchronous requests and for the Batch API's requests and job lines.

A failed attempt that may be retried waits before the next one: the time the server asked for
(``retry-after-ms`` or ``Retry-After``, seconds or an HTTP date), bounded to [0, :data:`MAX_RETRY_AFTER_S`];
otherwise full jitter, uniform in [0, min(``teacher.backoff_max_s``, ``teacher.backoff_base_s`` * 2**retry)],
which spreads the retries of many concurrent requests instead of synchronising them. After
``teacher.max_retries`` retries the caller raises :meth:`RetryPolicy.exhausted`: :class:`TeacherUnreachable`
when no attempt reached the server, else :class:`TeacherError`, each naming the last failure and the fix.

The loops that retry stay with their paths (:mod:`sedi.teacher.client` settles a budget reservation and fails
over between endpoints per attempt; :mod:`sedi.teacher.batch_api` looks for what an earlier attempt made
before it retries); what they share, how long to wait and how the retries end, is here.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, field

import httpx2

from sedi.config.teacher import TeacherConfig
from sedi.exceptions import TeacherError, TeacherUnreachable

# A server asking us to wait longer than this is treated as this (a run should not sleep for hours).
MAX_RETRY_AFTER_S = 600.0
# teacher.max_retries is at most 20: the bound only keeps a policy built with more retries from overflowing a float.
_MAX_EXPONENT = 32
# What an exhausted Batch API job line says where a control request names its step.
JOB_LINE = "job line"
# Statuses worth another attempt, with every 5xx: a timeout, a conflict, a rate limit. Others (400, 401, 404...)
# would fail the same way again.
_RETRYABLE_STATUS = frozenset({408, 409, 429})


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status may succeed on a retry (synchronous attempt, batch line or control request)."""
    return status in _RETRYABLE_STATUS or status >= 500


def retry_after(response: httpx2.Response | None) -> float | None:
    """Seconds the server asked us to wait, within [0, MAX_RETRY_AFTER_S]; None when it did not say
    anything usable (then the client's own backoff applies). Never raises."""
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        seconds: float | None
        try:
            seconds = float(value) / scale
        except ValueError:
            seconds = _http_date_delay(value) if header == "retry-after" else None
        if seconds is None or math.isnan(seconds):
            continue
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    return None


def _http_date_delay(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # "30s", "soon", garbage: not a date
    try:
        return when.timestamp() - time.time()
    except (ValueError, OverflowError, OSError):
        return None


@dataclass
class RetryPolicy:
    """How many retries a request gets, how long each waits, and the error once they are spent."""

    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def of(cls, config: TeacherConfig, rng: random.Random | None = None) -> RetryPolicy:
        return cls(config.max_retries, config.backoff_base_s, config.backoff_max_s, rng or random.Random())

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, retry: int, server_wait: float | None = None) -> float:
        """Seconds to wait before retry number ``retry + 1``: the server's ``Retry-After`` (bounded) when it sent
        one, else full jitter under the doubling backoff."""
        if server_wait is not None and not math.isnan(server_wait):
            return min(max(server_wait, 0.0), MAX_RETRY_AFTER_S)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(max(retry, 0), _MAX_EXPONENT)))
        return self.rng.uniform(0, ceiling)

    def exhausted(self, url: str, last: str, *, unreachable: bool, step: str | None = None) -> TeacherError:
        """The one error of a request whose attempts are all spent, ``last`` its last failure. ``step`` is None
        for a synchronous request, :data:`JOB_LINE` for a line that failed in every batch job it was allowed,
        else the Batch API control request that failed (e.g. "upload of the batch input file")."""
        n = self.attempts
        if step is None:
            if unreachable:
                return TeacherUnreachable(
                    f"teacher unreachable at {url} after {n} attempts ({last}): check teacher.base_url (or "
                    "teacher.provider) and that the server is running"
                )
            return TeacherError(
                f"teacher at {url} failed {n} attempts, last {last}: retry later, or raise teacher.max_retries / "
                "teacher.timeout_s"
            )
        if step == JOB_LINE:
            return TeacherError(
                f"teacher at {url}: a request failed in its batch job ({last}) after up to {n} jobs: answers "
                "already received are kept; retry later (rerun the same command), or raise teacher.max_retries"
            )
        if unreachable:
            return TeacherUnreachable(
                f"teacher unreachable at {url} after {n} attempts at the {step} ({last}): check teacher.base_url "
                "and that the server is running; the batch job is kept: rerun to resume it"
            )
        return TeacherError(
            f"teacher at {url}: the {step} failed {n} attempts, last {last}: the batch job is kept: retry later "
            "(rerun the same command to resume it), or raise teacher.max_retries"
        )
