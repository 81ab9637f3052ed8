"""The teacher client: every call counted, cached by content, retried with backoff, and capped.

One :class:`TeacherClient` serves a run. For each request it (1) answers from the response cache when
the same request was already paid for, (2) otherwise reserves the request's worst case against the
budget, writes a ledger row, sends it through the official ``openai`` client, and (3) stores the
response and completes the ledger row in one transaction. Retries happen here, not in the openai
client (``max_retries=0`` there), so that every HTTP attempt is a ledger row and a budgeted call.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion

from sedi.budget import Budget, cost_of, prompt_token_bound
from sedi.config import TeacherConfig
from sedi.exceptions import BudgetExceeded, TeacherError, TeacherUnreachable
from sedi.store import AttemptOutcome, CachedResponse, RunStore, Usage, dumps

# Bump when the meaning of a cached response changes; old cache rows then stop matching.
_CACHE_VERSION = 1
# A server asking us to wait longer than this is treated as this (a run should not sleep for hours).
_MAX_RETRY_AFTER_S = 600.0
_RETRYABLE_STATUS = {408, 409, 429}


@dataclass(frozen=True)
class TeacherRequest:
    """One generation request. Every field except ``tag`` is part of the cache key.

    ``sample_index`` tells apart repeated samples of the same prompt, so sampled generations are
    distinct yet replayable from the cache.
    """

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    sample_index: int = 0
    tag: str = field(default="", compare=False)

    def payload(self, model: str, mode: Literal["chat", "completion"]) -> dict[str, Any]:
        """Everything that changes the answer, and nothing else (no URL, no concurrency)."""
        body: dict[str, Any] = {
            "v": _CACHE_VERSION,
            "model": model,
            "mode": mode,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
            "sample_index": self.sample_index,
        }
        if mode == "chat":
            if self.messages is None:
                raise ValueError("teacher.mode is 'chat' but the request has no messages")
            body["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        else:
            if self.prompt is None:
                raise ValueError("teacher.mode is 'completion' but the request has no prompt")
            body["prompt"] = self.prompt
        return body

    def key(self, model: str, mode: Literal["chat", "completion"]) -> str:
        """The content address of this request (what the response cache is keyed on)."""
        return request_key(self.payload(model, mode))

    def texts(self) -> list[str]:
        return [c for _, c in self.messages] if self.messages is not None else [self.prompt or ""]


def request_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TeacherResponse:
    request_key: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    from_cache: bool

    @property
    def truncated(self) -> bool:
        """Cut off by the length limit: the last item of the text is incomplete."""
        return self.finish_reason == "length"


@dataclass
class BatchResult:
    """What :meth:`TeacherClient.complete_all` got: responses in request order, None where not obtained."""

    responses: list[TeacherResponse | None]
    budget_stop: BudgetExceeded | None = None


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str


class TeacherClient:
    """Budgeted, cached, retrying access to one teacher model."""

    def __init__(
        self,
        config: TeacherConfig,
        store: RunStore,
        budget: Budget,
        endpoint: Callable[[], Endpoint],
        *,
        http_client: httpx2.AsyncClient | None = None,
        tokens_per_byte: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.store = store
        self.budget = budget
        self._endpoint_factory = endpoint
        self._http_client = http_client
        self._tokens_per_byte = tokens_per_byte
        self._sleep = sleep
        self._client: openai.AsyncOpenAI | None = None
        self._endpoint: Endpoint | None = None
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._connect_lock = asyncio.Lock()
        self._rng = random.Random()

    async def _openai(self) -> openai.AsyncOpenAI:
        # Resolved lazily: a rerun served wholly from the cache never starts a local server. The lock
        # makes concurrent first requests share one endpoint (one local server, not one each).
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            self._endpoint = await asyncio.to_thread(self._endpoint_factory)
            self._client = openai.AsyncOpenAI(
                base_url=self._endpoint.base_url,
                api_key=self._endpoint.api_key,
                max_retries=0,
                timeout=self.config.timeout_s,
                http_client=self._http_client,
            )
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    # -- public -----------------------------------------------------------------------------
    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        payload = request.payload(self.config.model, self.config.mode)
        key = request_key(payload)
        hit = self._cache_hit(key)
        if hit is not None:
            return hit
        async with self._semaphore:
            # Another task may have fetched the same key while this one waited.
            return self._cache_hit(key) or await self._fetch(request, payload, key)

    def _cache_hit(self, key: str) -> TeacherResponse | None:
        hit = self.store.cached(key)
        if hit is None:
            return None
        self.store.count_cache_hit()
        return _from_cached(hit, from_cache=True)

    async def complete_all(
        self,
        requests: Sequence[TeacherRequest],
        on_done: Callable[[int, TeacherResponse], None] | None = None,
    ) -> BatchResult:
        """Run requests concurrently (bounded). Stops sending at the first budget refusal and
        returns what it has; other errors propagate after in-flight requests have finished."""
        results: list[TeacherResponse | None] = [None] * len(requests)
        stop: list[BudgetExceeded] = []

        async def one(i: int, req: TeacherRequest) -> None:
            if stop:
                return
            try:
                results[i] = await self.complete(req)
            except BudgetExceeded as exc:
                stop.append(exc)
                return
            if on_done is not None:
                on_done(i, results[i])  # type: ignore[arg-type]

        outcomes = await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return BatchResult(results, stop[0] if stop else None)

    # -- one request, with retries ----------------------------------------------------------
    def _worst_case(self, request: TeacherRequest) -> Usage:
        prompt_ub = prompt_token_bound(request.texts(), self._tokens_per_byte)
        tokens = prompt_ub + request.max_tokens
        return Usage(1, tokens, cost_of(prompt_ub, request.max_tokens, self.config.prices))

    async def _fetch(self, request: TeacherRequest, payload: dict[str, Any], key: str) -> TeacherResponse:
        client = await self._openai()
        worst = self._worst_case(request)
        endpoint = "chat/completions" if self.config.mode == "chat" else "completions"
        attempt = self.store.attempts_for(key)
        last_error = ""
        all_connect_errors = True
        for retry in range(self.config.max_retries + 1):
            reservation = await self.budget.reserve(worst)  # raises BudgetExceeded: nothing is sent
            call_id = self.store.begin_attempt(key, attempt, self.config.model, endpoint, reservation)
            attempt += 1
            started = time.monotonic()
            try:
                text, finish, usage = await self._send(client, request)
            except Exception as exc:  # classified below; anything unexpected is recorded, then raised
                outcome, retryable, wait, connect_error = _classify(exc, worst, time.monotonic() - started)
                self.store.finish_attempt(call_id, outcome)
                self.budget.settle(reservation, outcome.charged)
                all_connect_errors = all_connect_errors and connect_error
                last_error = f"{outcome.error_class}: {outcome.error}"
                if not retryable:
                    raise TeacherError(_fatal_message(exc, self.config, self._endpoint)) from exc
                if retry == self.config.max_retries:
                    break
                await self._sleep(self._backoff(retry, wait))
                continue
            prompt_tokens, completion_tokens = usage if usage is not None else (0, 0)
            # Without reported usage the budget charges the worst case: it cannot know better.
            charged = (
                Usage(
                    1, prompt_tokens + completion_tokens, cost_of(prompt_tokens, completion_tokens, self.config.prices)
                )
                if usage is not None
                else worst
            )
            response = CachedResponse(key, text, finish, prompt_tokens, completion_tokens)
            self.store.finish_attempt(
                call_id,
                AttemptOutcome(
                    status="length" if finish == "length" else "ok",
                    http_status=200,
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=charged.cost_usd,
                    charged=charged,
                    latency_s=time.monotonic() - started,
                ),
                response=(dumps(payload), response),
            )
            self.budget.settle(reservation, charged)
            return _from_cached(response, from_cache=False)
        url = self._endpoint.base_url if self._endpoint else "?"
        attempts = self.config.max_retries + 1
        if all_connect_errors:
            raise TeacherUnreachable(
                f"teacher unreachable at {url} after {attempts} attempts ({last_error}): check teacher.base_url "
                "(or teacher.provider) and that the server is running"
            )
        raise TeacherError(
            f"teacher at {url} failed {attempts} attempts, last {last_error}: retry later, or raise "
            "teacher.max_retries / teacher.timeout_s"
        )

    async def _send(
        self, client: openai.AsyncOpenAI, request: TeacherRequest
    ) -> tuple[str, str | None, tuple[int, int] | None]:
        common: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
        }
        if request.stop:
            common["stop"] = list(request.stop)
        if request.seed is not None:
            common["seed"] = request.seed
        if self.config.mode == "chat":
            assert request.messages is not None
            messages: Any = [{"role": r, "content": c} for r, c in request.messages]
            chat = await client.chat.completions.create(messages=messages, **common)
            # A non-JSON body comes back as a plain string, a JSON body of the wrong shape as empty fields.
            if not isinstance(chat, ChatCompletion) or not chat.choices:
                raise _Malformed("response has no choices")
            choice = chat.choices[0]
            text, finish, usage = choice.message.content, choice.finish_reason, chat.usage
        else:
            completion = await client.completions.create(prompt=request.prompt or "", **common)
            if not isinstance(completion, Completion) or not completion.choices:
                raise _Malformed("response has no choices")
            text, finish, usage = completion.choices[0].text, completion.choices[0].finish_reason, completion.usage
        if text is None or not isinstance(text, str):
            raise _Malformed("response has no text")
        counted = (int(usage.prompt_tokens), int(usage.completion_tokens)) if usage is not None else None
        return text, finish, counted

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _MAX_RETRY_AFTER_S)
        # Full jitter: spreads retries of many concurrent requests instead of synchronising them.
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**retry))
        return self._rng.uniform(0, ceiling)


class _Malformed(Exception):
    """A 200 response whose body is not a usable completion."""


def _from_cached(hit: CachedResponse, *, from_cache: bool) -> TeacherResponse:
    return TeacherResponse(
        hit.request_key, hit.text, hit.finish_reason, hit.prompt_tokens, hit.completion_tokens, from_cache
    )


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if header == "retry-after" else None
            if parsed is not None:
                return parsed.timestamp() - time.time()
    return None


def _classify(exc: Exception, worst: Usage, latency: float) -> tuple[AttemptOutcome, bool, float | None, bool]:
    """(ledger outcome, retryable, server-requested wait, nothing-was-sent) for a failed attempt."""
    name = type(exc).__name__
    message = str(exc).splitlines()[0][:300] if str(exc) else name
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        # Error responses are not billed by OpenAI-compatible providers; they do count as calls.
        outcome = AttemptOutcome("error", status, charged=Usage(1), latency_s=latency, error_class=name, error=message)
        return outcome, retryable, _retry_after(exc.response), False
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        not_sent = isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout)
        # A timeout or a dropped connection may have been served and billed: charge the worst case.
        charged = Usage(1) if not_sent else worst
        outcome = AttemptOutcome("error", None, charged=charged, latency_s=latency, error_class=name, error=message)
        return outcome, True, None, not_sent
    if isinstance(exc, _Malformed | openai.APIResponseValidationError | ValueError):
        outcome = AttemptOutcome(
            "error", 200, charged=worst, latency_s=latency, error_class="MalformedResponse", error=message
        )
        return outcome, True, None, False
    outcome = AttemptOutcome("error", None, charged=worst, latency_s=latency, error_class=name, error=message)
    return outcome, False, None, False


def _fatal_message(exc: Exception, config: TeacherConfig, endpoint: Endpoint | None) -> str:
    url = endpoint.base_url if endpoint else "?"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return (
            f"teacher at {url} rejected the API key (HTTP {exc.status_code}): check the key in "
            f"${config.api_key_env} (teacher.api_key_env)"
        )
    if isinstance(exc, openai.NotFoundError):
        return (
            f"teacher at {url} does not know model {config.model!r} or the endpoint (HTTP 404): fix teacher.model "
            "or teacher.base_url"
        )
    if isinstance(exc, openai.APIStatusError):
        detail = str(exc).splitlines()[0][:300]
        hint = " (a base model needs teacher.mode: completion)" if config.mode == "chat" else ""
        return f"teacher at {url} refused the request (HTTP {exc.status_code}: {detail}){hint}: fix the teacher config"
    return f"teacher call failed unexpectedly ({type(exc).__name__}: {exc}): this is a bug, please report it"
