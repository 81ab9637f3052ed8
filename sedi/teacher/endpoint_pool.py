"""A pool of teacher endpoints serving the same model (``teacher.base_urls``): which one gets the next attempt.

Routing is least outstanding requests: each attempt goes to the healthy endpoint with the fewest attempts in
flight (ties to the one listed first), which keeps replicas of unequal speed equally busy without knowing their
speeds. Health is passive, read from the attempts themselves: an endpoint whose last ``FAILURES_TO_SET_ASIDE``
attempts all failed at the transport or server level (refused connection, timeout, 5xx) is set aside for a
cooldown that doubles with each consecutive set-aside (``COOLDOWN_S`` up to ``MAX_COOLDOWN_S``); after it, one
attempt probes it again. A 4xx answer, a 429 included, says nothing about the replica's health and does not count.

Failover: the attempt that follows a failed one avoids the endpoint that failed, when another is usable, so a
replica that dies mid-run costs each request in flight one failed attempt (a ledger row; the budget counts it)
and nothing else. When every endpoint is set aside, the one whose cooldown ends first is tried anyway: a pool
never refuses to send, the retry limit (``teacher.max_retries``) decides when to give up.

The pool routes; it does not send. Each endpoint has its own ``openai`` client, made lazily by the caller's
factory, so one connection pool per replica.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Client = TypeVar("Client")

FAILURES_TO_SET_ASIDE = 3  # consecutive failed attempts; one refused connection can be a restart blip
COOLDOWN_S = 5.0  # first set-aside; doubles per consecutive one
MAX_COOLDOWN_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server: its base URL (ending in /v1, never with user-info) and the key sent to it;
    ``basic_auth``: the ``Authorization`` value sent instead of the key, from user-info split off the URL."""

    base_url: str
    api_key: str
    basic_auth: str | None = None


@dataclass
class Member(Generic[Client]):
    """One endpoint of the pool, with its client and what the pool knows of its health."""

    base_url: str
    client: Client
    outstanding: int = 0
    failures: int = 0  # consecutive failed attempts
    set_asides: int = 0  # consecutive set-asides, for the doubling cooldown
    aside_until: float = 0.0


class EndpointPool(Generic[Client]):
    """Least-outstanding routing with passive health over endpoints of one model."""

    def __init__(self, clients: Sequence[tuple[str, Client]], *, clock: Callable[[], float] = time.monotonic) -> None:
        """``clients``: each endpoint's base URL and the client that talks to it, in the configured order."""
        if not clients:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.members = [Member(url, client) for url, client in clients]
        self._clock = clock

    def usable(self, member: Member[Client]) -> bool:
        return member.aside_until <= self._clock()

    def pick(self, avoid: str | None = None) -> Member[Client]:
        """The member the next attempt goes to (see the module docstring)."""
        usable = [m for m in self.members if self.usable(m)]
        preferred = [m for m in usable if m.base_url != avoid] or usable
        if not preferred:  # all set aside: probe the one that comes back first
            return min(self.members, key=lambda m: m.aside_until)
        return min(preferred, key=lambda m: m.outstanding)  # min keeps the first of equals: the listed order

    @contextlib.contextmanager
    def attempt(self, avoid: str | None = None) -> Iterator[Member[Client]]:
        """Count one attempt in flight on the picked member for as long as the block runs."""
        member = self.pick(avoid)
        member.outstanding += 1
        try:
            yield member
        finally:
            member.outstanding -= 1

    def failover(self, failed: Member[Client]) -> bool:
        """Whether the next attempt after one that failed on ``failed`` can go to another usable endpoint."""
        return any(m is not failed and self.usable(m) for m in self.members)

    def record(self, member: Member[Client], *, failed: bool) -> None:
        """What an attempt on ``member`` showed: ``failed`` for a transport or server (5xx) failure."""
        if not failed:
            member.failures = member.set_asides = 0
            member.aside_until = 0.0
            return
        member.failures += 1
        # A member back from a set-aside has had no success since: its first failure sends it back at once.
        if member.failures >= FAILURES_TO_SET_ASIDE or member.set_asides:
            member.aside_until = self._clock() + min(MAX_COOLDOWN_S, COOLDOWN_S * 2**member.set_asides)
            member.set_asides += 1
            member.failures = 0


def endpoint_fault(exc: BaseException | None) -> bool:
    """Whether a failed attempt says the endpoint itself is unwell: no connection, a timeout, or a 5xx answer."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500
