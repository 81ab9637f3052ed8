"""The teacher client: every call counted, cached by content, retried with backoff, and capped.

One :class:`TeacherClient` serves a run. For each request it (1) answers from the response cache when
the same request was already paid for, (2) otherwise reserves the request's worst case against the
budget, waits for room under the rate limits (:mod:`sedi.teacher.ratelimit`), writes a ledger row, sends it
through the official ``openai`` client, and (3) stores the response and completes the ledger row in one
transaction. Retries happen here, not in the openai client (``max_retries=0`` there), so that every HTTP
attempt is a ledger row and a budgeted call; how long a retry waits and the error once they are spent are the
policy the Batch API path shares (:mod:`sedi.teacher.retry`), as is the worst case reserved
(:func:`sedi.teacher.budget.worst_case`). With ``teacher.base_urls`` each attempt goes to one server of a
pool (:mod:`sedi.teacher.endpoint_pool`: least outstanding, failing servers set aside, a retry fails over at once); the
ledger row names it, and the cache key does not (the servers serve one model), nor does the budget (one for all).

Money rules: every reservation is settled in a ``finally`` whatever happens (an odd header, a database
error, a cancellation); one request per cache key is in flight, so identical requests pay once; a
response is charged as reported, or its worst case when the report is missing or partial; a report
above the worst case is charged as reported, cached, recorded as ``UsageOverReservation`` and stops
the client (:class:`UsageMisreported`), as does a ledger that cannot be written (``RunDirError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

from sedi.base import redact
from sedi.base.files import dumps
from sedi.base.vocabulary import CachedResponse, Usage
from sedi.config.teacher import TeacherConfig
from sedi.exceptions import BudgetExceeded, RunDirError, SediError, TeacherError
from sedi.store.db import RunStore, ledger
from sedi.teacher.batch_api import BatchSender
from sedi.teacher.budget import Budget, worst_case
from sedi.teacher.endpoint_pool import Endpoint, EndpointPool, endpoint_fault
from sedi.teacher.outcomes import (
    Attempt,
    UsageMisreported,
    answer_outcome,
    charge,
    classify,
    fatal_message,
    misreport_message,
    send,
)
from sedi.teacher.ratelimit import WINDOW_S, RateLimiter
from sedi.teacher.request import TeacherRequest, TeacherResponse, request_key
from sedi.teacher.retry import RetryPolicy

__all__ = [
    "CompletedRequests",
    "Endpoint",
    "TeacherClient",
    "TeacherRequest",
    "TeacherResponse",
    "UsageMisreported",
    "request_key",
]


@dataclass
class CompletedRequests:
    """What :meth:`TeacherClient.complete_all` got: responses in request order, None where not obtained."""

    responses: list[TeacherResponse | None]
    budget_stop: BudgetExceeded | None = None


_DRAINED = "interrupted once the teacher requests in flight had finished"


class _Skipped(Exception):
    """A batch stopped sending (budget refusal, an error, or a drain) before this request's turn came."""


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class TeacherClient:
    """Budgeted, cached, retrying access to one teacher model."""

    def __init__(
        self,
        config: TeacherConfig,
        store: RunStore,
        budget: Budget,
        endpoint: Callable[[], Endpoint | Sequence[Endpoint]],
        *,
        http_client: httpx2.AsyncClient | None = None,
        tokens_per_byte: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rate_window_s: float = WINDOW_S,
    ) -> None:
        self.config = config
        self.store = store
        self.budget = budget
        self._endpoint_factory = endpoint
        self._http_client = http_client
        self._tokens_per_byte = tokens_per_byte
        self._sleep = sleep
        self._pool: EndpointPool[openai.AsyncOpenAI] | None = None
        self._last_url = "?"
        self._semaphore = asyncio.Semaphore(config.concurrency)
        # The embedded local server has no rate limits; any other provider may say in its headers.
        read_headers = config.provider == "openai"
        self._limiter = RateLimiter(config.rpm, config.tpm, read_headers=read_headers, window_s=rate_window_s)
        self._connect_lock = asyncio.Lock()
        self._keys: dict[str, _KeyLock] = {}
        self._halted: SediError | None = None
        self._retry = RetryPolicy.of(config)
        self.in_flight = 0  # attempts sent and not yet settled
        self.draining = False  # see drain()
        # teacher.batch_api: complete_all sends batch jobs (sedi.teacher.batch_api). With it off, the sender still
        # collects the jobs an earlier start left running (paid for: their requests must not be sent again).
        self._batch: BatchSender | None = None
        if config.provider == "openai":
            self._batch = BatchSender(
                config,
                store,
                budget,
                self._openai,
                self._cache_hit,
                tokens_per_byte=tokens_per_byte,
                sleep=sleep,
                retry=self._retry,
            )
        # The spend so far at the prices in force, whoever built the budget: a run first started without
        # prices has tokens in its ledger but $0 charged, and must not restart from $0.
        budget.account_for(store.spent(config.prices))
        with ledger.ledger_writes(store.run_dir / store.DB_NAME):
            ledger.record_pricing(store.db, config)

    async def _endpoints(self) -> EndpointPool[openai.AsyncOpenAI]:
        # Resolved lazily: a rerun served wholly from the cache never starts a local server. The lock
        # makes concurrent first requests share one endpoint (one local server, not one each).
        async with self._connect_lock:
            if self._pool is None:
                found = await asyncio.to_thread(self._endpoint_factory)
                endpoints = [found] if isinstance(found, Endpoint) else list(found)
                for e in endpoints:  # however the endpoints were made, their keys never reach a write
                    redact.register(e.api_key)
                    redact.register(e.basic_auth)
                self._pool = EndpointPool([(e.base_url, self._client_for(e)) for e in endpoints])
            return self._pool

    def _client_for(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=self.config.timeout_s,
            http_client=self._http_client,
            # user-info split off the URL (sedi.teacher.endpoint): sent as httpx would have sent it, as Basic auth
            default_headers=None if endpoint.basic_auth is None else {"Authorization": endpoint.basic_auth},
        )

    async def _openai(self) -> openai.AsyncOpenAI:
        """The first endpoint's client: Batch API jobs live at one provider endpoint (never a pool)."""
        return (await self._endpoints()).members[0].client

    async def aclose(self) -> None:
        for member in self._pool.members if self._pool is not None else ():
            await member.client.close()

    # -- public -----------------------------------------------------------------------------
    def drain(self) -> None:
        """Send nothing more, retry nothing, and let the attempts in flight finish: they are paid for whatever
        happens, and their answers go to the response cache as always. The call waiting on them then raises
        KeyboardInterrupt, so the run ends interrupted (as after Ctrl-C) with nothing it paid for thrown away."""
        self.draining = True

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        try:
            return await self._complete(request, lambda: False)
        except _Skipped:
            raise KeyboardInterrupt(_DRAINED) from None

    def cached(self, request: TeacherRequest) -> TeacherResponse | None:
        """The stored answer to ``request`` if it was already paid for; never sends anything."""
        return self._cache_hit(request.key(self.config.model, self.config.mode))

    async def _complete(self, request: TeacherRequest, stopped: Callable[[], bool]) -> TeacherResponse:
        payload = request.payload(self.config.model, self.config.mode)
        key = request_key(payload)
        hit = self._cache_hit(key)
        if hit is not None:
            return hit
        async with self._one_per_key(key), self._semaphore:
            # An identical request may have paid for the answer while this one waited.
            hit = self._cache_hit(key)
            if hit is not None:
                return hit
            if stopped() or self.draining:
                raise _Skipped
            return await self._fetch(request, payload, key)

    @contextlib.asynccontextmanager
    async def _one_per_key(self, key: str) -> AsyncIterator[None]:
        # One request per key in flight: identical requests in one batch would otherwise both pay, and
        # their retries would race for the same attempt numbers. The second gets the first's answer.
        entry = self._keys.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._keys[key]

    def _cache_hit(self, key: str) -> TeacherResponse | None:
        with ledger.ledger_writes(self.store.run_dir / self.store.DB_NAME):
            hit = self.store.cached(key)
            if hit is None:
                return None
            self.store.count_cache_hit()
        return _from_cached(hit, from_cache=True)

    async def complete_all(
        self,
        requests: Sequence[TeacherRequest],
        on_done: Callable[[int, TeacherResponse], None] | None = None,
    ) -> CompletedRequests:
        """Run requests concurrently (bounded). Stops sending at the first budget refusal or error and
        returns what it has, answers already in the cache included (they cost nothing); an error then
        propagates once the requests in flight have finished. With ``teacher.batch_api`` they go as batch jobs."""
        if self._batch is not None and self.config.batch_api:
            responses, refusal = await self._batch.complete_all(requests, on_done)
            return CompletedRequests(responses, refusal)
        if self._batch is not None:
            await self._batch.resume()
        results: list[TeacherResponse | None] = [None] * len(requests)
        stop: list[BudgetExceeded] = []
        failed: list[BaseException] = []

        def stopped() -> bool:
            return bool(stop or failed)

        async def one(i: int, req: TeacherRequest) -> None:
            try:
                results[i] = self.cached(req) if stopped() else await self._complete(req, stopped)
            except _Skipped:
                results[i] = None
            except BudgetExceeded as exc:
                stop.append(exc)
            except BaseException as exc:
                failed.append(exc)
                raise
            if results[i] is not None and on_done is not None:
                on_done(i, results[i])  # type: ignore[arg-type]

        outcomes = await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self.draining:
            raise KeyboardInterrupt(_DRAINED)
        return CompletedRequests(results, stop[0] if stop else None)

    # -- one request, with retries ----------------------------------------------------------
    def _worst_case(self, request: TeacherRequest) -> Usage:
        return worst_case(request, self.config.prices, self._tokens_per_byte)

    def _raise_if_halted(self) -> None:
        if self._halted is not None:
            # A fresh instance per raise: one exception object raised from many tasks would share a traceback.
            raise type(self._halted)(str(self._halted))

    @property
    def _url(self) -> str:
        return self._last_url

    async def _fetch(self, request: TeacherRequest, payload: dict[str, Any], key: str) -> TeacherResponse:
        pool = await self._endpoints()
        worst = self._worst_case(request)
        avoid: str | None = None  # a retry goes to another endpoint than the one that just failed, if any
        endpoint = "chat/completions" if self.config.mode == "chat" else "completions"
        last_error = ""
        all_connect_errors = True
        for retry in range(self._retry.attempts):
            self._raise_if_halted()
            if self.draining:
                raise _Skipped  # interrupted: the failed attempt is not retried
            reservation = await self.budget.reserve(worst)  # raises BudgetExceeded: nothing is sent
            charged = Usage()  # settled below however the attempt ends, so no reservation can leak
            try:
                # Waits for room under teacher.rpm/tpm and the provider's limits; a cancelled wait sent nothing.
                async with self._limiter.slot(worst.tokens) as slot:
                    self._raise_if_halted()  # it may have happened while this request waited for room
                    if self.draining:
                        raise _Skipped  # so may an interruption
                    with pool.attempt(avoid) as member:
                        self._last_url = member.base_url
                        call_id = self.store.begin_attempt(
                            key, 0, self.config.model, endpoint, reservation, member.base_url
                        )
                        charged = worst  # the request may leave now: until its outcome is recorded, assume the worst
                        slot.sent = True
                        self.in_flight += 1
                        try:
                            result = await self._attempt(member.client, request, payload, key, call_id, worst)
                        finally:
                            self.in_flight -= 1
                        charged, slot.headers = result.charged, result.headers
                        fault = result.response is None and endpoint_fault(result.error)
                        pool.record(member, failed=fault)
            except RunDirError as exc:
                self._halted = exc  # the ledger cannot record calls: nothing more may be sent
                raise
            finally:
                self.budget.settle(reservation, charged)
            if result.misreport is not None:
                self._halted = UsageMisreported(result.misreport)
                self._raise_if_halted()
            if result.response is not None:
                return result.response
            assert result.error is not None
            all_connect_errors = all_connect_errors and result.connect_error
            last_error = result.summary
            if not result.retryable:
                raise TeacherError(fatal_message(result.error, self.config, self._url)) from result.error
            if retry == self._retry.max_retries:
                break
            avoid = member.base_url if fault else None
            if fault and pool.failover(member):
                continue  # another endpoint takes the retry at once: the wait was for this one to recover
            await self._sleep(self._retry.delay(retry, result.wait))
        raise self._retry.exhausted(self._url, last_error, unreachable=all_connect_errors)

    async def _attempt(
        self,
        client: openai.AsyncOpenAI,
        request: TeacherRequest,
        payload: dict[str, Any],
        key: str,
        call_id: int,
        worst: Usage,
    ) -> Attempt:
        """Send once and record the outcome in the ledger row ``call_id`` (and the cache, for an answer)."""
        started = time.monotonic()
        try:
            text, finish, usage, headers = await send(client, self.config, request)
        except Exception as exc:  # classified; anything unexpected is recorded, then reported as fatal
            failed = classify(exc, worst, time.monotonic() - started)
            outcome = failed.outcome
            self.store.finish_attempt(call_id, outcome)
            summary = f"{outcome.error_class}: {outcome.error}"
            error_headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else None
            return Attempt(
                outcome.charged, None, None, exc, failed.retryable, failed.wait, failed.not_sent, summary, error_headers
            )
        found = charge(usage, worst, self.config.prices)
        misreport = misreport_message(self._url, found, worst, request.max_tokens) if found.over_reservation else None
        response = CachedResponse(key, text, finish, found.prompt_tokens, found.completion_tokens)
        # The answer is paid for whatever its usage report says, so it is cached in every case.
        outcome = answer_outcome(found, finish, time.monotonic() - started, misreport)
        self.store.finish_attempt(call_id, outcome, response=(dumps(payload), response))
        return Attempt(found.charged, _from_cached(response, from_cache=False), misreport, headers=headers)


def _from_cached(hit: CachedResponse, *, from_cache: bool) -> TeacherResponse:
    return TeacherResponse(
        hit.request_key, hit.text, hit.finish_reason, hit.prompt_tokens, hit.completion_tokens, from_cache
    )
