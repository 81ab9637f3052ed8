"""Client-side rate limits: ``teacher.rpm``, ``teacher.tpm`` and the provider's ``x-ratelimit-*`` headers.

Before an attempt leaves, :meth:`RateLimiter.slot` waits until it fits under all of:

- ``teacher.rpm`` and ``teacher.tpm``: a sliding window (a minute) over the requests sent and their tokens,
  counted as the worst case the budget reserves (prompt bound plus ``max_tokens``). A request counts from
  when it is sent until a full window after its attempt ended, so a provider never sees more than the limit
  in any window, whatever moment of a request it counts and however the requests' latencies differ. A request
  larger than ``tpm`` goes alone (it cannot fit any other way).
- the provider's headers (``x-ratelimit-remaining-requests`` / ``-tokens``, ``x-ratelimit-reset-requests`` /
  ``-tokens``, ``x-ratelimit-limit-*``). After a response, what may still be sent is what it reports as
  remaining less every request that may have reached the server after it (in flight, or ended since it was
  sent). A request that does not fit waits for the reported reset (then the reported limit is available
  again) or for a fresher response. Until the first response shows whether the provider sends these headers,
  one request is sent at a time, so a run at high concurrency does not open with a burst of 429s.

The teacher client waits here after reserving the budget and before writing the ledger row: a cancelled wait
settles the reservation at zero and nothing was sent, so waiting never spends or reserves anything twice.

Hand-written, not a library: ``aiolimiter`` (a leaky bucket) limits one dimension, counts a request when it
starts rather than until it ended, and knows nothing of requests in flight or of response headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from sedi.teacher.retry import MAX_RETRY_AFTER_S

WINDOW_S = 60.0  # teacher.rpm and teacher.tpm are per minute
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+")


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI-style duration ("20ms", "1s", "6m0s", "1h2m3.5s") or a plain number of seconds,
    within [0, MAX_RETRY_AFTER_S]; None when absent or unusable. Never raises."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        if not _DURATION.fullmatch(text):
            return None
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in _PART.findall(text))
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _amount(value: str | None) -> float | None:
    """A reported count (remaining or limit): a finite number, at least 0; None when absent or unusable."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return max(number, 0.0) if math.isfinite(number) else None


@dataclass(eq=False)
class Slot:
    """One attempt's place under the limits. The teacher client sets ``sent`` once the request may have left,
    and ``headers`` to the response's headers when one came back (an error response included)."""

    tokens: int
    started: float
    ended: float | None = None
    sent: bool = False
    headers: Mapping[str, str] | None = None


@dataclass
class _Reported:
    """What the provider's headers said about one limit (requests or tokens)."""

    left: float | None = None  # what may still be sent before reset_at; None: nothing known
    reset_at: float | None = None
    limit: float | None = None


class RateLimiter:
    """Holds each attempt until it fits under ``rpm``, ``tpm`` and (``read_headers``) the provider's headers."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        read_headers: bool,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpm = rpm
        self._tpm = tpm
        self._read_headers = read_headers
        self._window = window_s
        self._clock = clock
        self._slots: list[Slot] = []  # in flight, or ended less than a window ago
        self._reported = {"requests": _Reported(), "tokens": _Reported()}
        self._probing = read_headers
        # Plain futures, not an asyncio.Event: a client may serve several event loops (one asyncio.run each).
        self._waiters: set[asyncio.Future[None]] = set()

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Slot]:
        """Wait until an attempt of ``tokens`` (its worst case) fits, then hold its place until it ends."""
        while waits := self._blocked(tokens, self._clock()):
            timeouts = [w for w in waits if w is not None]
            await self._changed(min(timeouts) if timeouts else None)
        slot = Slot(tokens, self._clock())
        self._slots.append(slot)
        for name, need in (("requests", 1), ("tokens", tokens)):
            reported = self._reported[name]
            if reported.left is not None:
                reported.left -= need
        try:
            yield slot
        finally:
            self._release(slot)

    def _blocked(self, tokens: int, now: float) -> list[float | None]:
        """Why an attempt of ``tokens`` cannot leave now: for each limit in the way, the seconds until it may
        have room, or None (until an attempt ends). Empty: it may leave."""
        self._expire(now)
        in_flight = [s for s in self._slots if s.ended is None]
        if self._probing and in_flight:
            return [None]
        ends = [s.ended + self._window - now for s in self._slots if s.ended is not None]
        next_free = min(ends) if ends else None
        waits: list[float | None] = []
        if self._rpm is not None and len(self._slots) + 1 > self._rpm:
            waits.append(next_free)
        if self._tpm is not None and sum(s.tokens for s in self._slots) + min(tokens, self._tpm) > self._tpm:
            waits.append(next_free)
        for name, need in (("requests", 1), ("tokens", tokens)):
            reported = self._reported[name]
            if reported.left is None or reported.left >= need:
                continue
            if reported.reset_at is not None:
                waits.append(reported.reset_at - now)
            elif in_flight:  # no reset known: a response to come will say more
                waits.append(None)
        return waits

    def _expire(self, now: float) -> None:
        self._slots = [s for s in self._slots if s.ended is None or s.ended + self._window > now]
        for name, reported in self._reported.items():
            if reported.reset_at is not None and now >= reported.reset_at:
                in_flight = [s for s in self._slots if s.ended is None]  # may reach the server after its reset
                used = len(in_flight) if name == "requests" else sum(s.tokens for s in in_flight)
                reported.left = None if reported.limit is None else reported.limit - used
                reported.reset_at = None

    def _release(self, slot: Slot) -> None:
        now = self._clock()
        if slot.sent:
            slot.ended = now
        else:  # never left: it takes no room
            self._slots.remove(slot)
        if self._read_headers and slot.headers is not None:
            self._observe(slot, slot.headers, now)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _observe(self, slot: Slot, headers: Mapping[str, str], now: float) -> None:
        self._probing = False
        # Every request that may have reached the server after this one: its report did not count them.
        later = [s for s in self._slots if s is not slot and (s.ended is None or s.ended > slot.started)]
        for name in ("requests", "tokens"):
            remaining = _amount(headers.get(f"x-ratelimit-remaining-{name}"))
            if remaining is None:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}"))
            reported = self._reported[name]
            reported.left = remaining - (len(later) if name == "requests" else sum(s.tokens for s in later))
            reported.reset_at = None if reset is None else now + reset
            reported.limit = _amount(headers.get(f"x-ratelimit-limit-{name}"))

    async def _changed(self, timeout: float | None) -> None:
        """Wait until an attempt ends or ``timeout`` seconds pass."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, None if timeout is None else max(timeout, 0.001))
        finally:
            self._waiters.discard(waiter)
