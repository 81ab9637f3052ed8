"""How one teacher HTTP attempt ended: reported usage, server-requested waits, and error classes.

Everything here reads what a provider sent, which may be wrong in any way (negative or absurd token
counts, ``usage: {}``, a ``Retry-After: 30s``), so nothing here raises on odd input: it classifies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion

from sedi.base.redact import redact, redact_known
from sedi.base.vocabulary import REFUSED, AttemptOutcome, Usage
from sedi.config.teacher import Prices, TeacherConfig
from sedi.exceptions import TeacherError
from sedi.store.ledger import USAGE_OVER_RESERVATION, USAGE_UNKNOWN
from sedi.teacher.budget import cost_of
from sedi.teacher.request import TeacherRequest, TeacherResponse
from sedi.teacher.retry import retry_after, retryable_status

# Larger counts are clamped: SQLite stores 64-bit integers, and no request comes near this anyway.
_MAX_TOKEN_COUNT = 10**12
# A completion longer than this many characters per max_tokens token (plus _SLACK_CHARS) cannot have come from a
# request capped at max_tokens: it is refused as malformed. The longest token of the bundled teacher's tokenizer
# (gemma-3-270m) is 31 characters (a run of spaces, tabs or newlines), so no text of N tokens can pass 32*N; the
# shipped seed and held-out texts (instructions, inputs, outputs of 40+ characters) average 4.3 characters per token
# with that tokenizer and none passes 6.9, so a real answer is refused only if it is degenerate.
MAX_CHARS_PER_TOKEN = 32
_SLACK_CHARS = 1024


class UsageMisreported(TeacherError):
    """The provider reported more usage than the request could use: its accounting cannot be trusted."""


class Malformed(Exception):
    """A 200 response whose body is not a usable completion."""


def _count(value: Any) -> int | None:
    """A reported token count, clamped to [0, 10**12]; None when absent or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return min(max(int(value), 0), _MAX_TOKEN_COUNT)


def read_usage(usage: Any) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens as reported, each None when the provider did not say."""
    if usage is None:
        return None, None
    if isinstance(usage, dict):
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return _count(getattr(usage, "prompt_tokens", None)), _count(getattr(usage, "completion_tokens", None))


def read_cached(usage: Any) -> int:
    """Prompt tokens served from the provider's prompt cache (``usage.prompt_tokens_details.cached_tokens``);
    0 when the provider does not say."""
    name = "prompt_tokens_details"
    details = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
    if details is None:
        return 0
    value = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    return _count(value) or 0


@dataclass(frozen=True)
class Charge:
    """What a 200 response is charged, and how far its report can be trusted."""

    prompt_tokens: int
    completion_tokens: int
    reported: Usage  # what the provider says (unknown counts as 0)
    charged: Usage  # what the budget counts
    usage_known: bool
    over_reservation: bool
    cached_tokens: int = 0  # of prompt_tokens (never more), priced at teacher.prices.cached_prompt when set


def charge(usage: Any, worst: Usage, prices: Prices | None) -> Charge:
    """Charge a response: as reported when complete; its worst case when the report is missing or partial
    (the budget cannot know better); as reported, and flagged, when the report exceeds the worst case."""
    prompt, completion = read_usage(usage)
    p, c = prompt or 0, completion or 0
    cached = min(read_cached(usage), p)
    reported = Usage(1, p + c, cost_of(p, c, prices, cached))
    known = prompt is not None and completion is not None
    charged = (
        reported if known else Usage(1, max(worst.tokens, reported.tokens), max(worst.cost_usd, reported.cost_usd))
    )
    over = reported.tokens > worst.tokens or reported.cost_usd > worst.cost_usd + 1e-12
    return Charge(p, c, reported, charged, known, over, cached)


@dataclass
class Attempt:
    """How one attempt ended: a response (with its charge), or a classified failure."""

    charged: Usage
    response: TeacherResponse | None = None
    misreport: str | None = None
    error: Exception | None = None
    retryable: bool = False
    wait: float | None = None
    connect_error: bool = False
    summary: str = ""
    headers: Mapping[str, str] | None = None  # of the response, when one came back


@dataclass(frozen=True)
class Failure:
    """How a failed attempt is recorded and what may follow it."""

    outcome: AttemptOutcome  # its ledger row
    retryable: bool
    wait: float | None  # seconds the server asked to wait before a retry (None: the client's own backoff)
    not_sent: bool  # no connection was made: the request never left (so it cannot have been billed)


def classify(exc: Exception, worst: Usage, latency: float) -> Failure:
    """How a failed attempt ended: its ledger outcome, whether to retry, after how long, and whether it was sent."""
    name = type(exc).__name__
    # A provider may echo the request's Authorization header or the key in its error body: never recorded.
    # Redacted before it is cut: a key cut in half by the cut would no longer match its registered value.
    message = redact(str(exc)).splitlines()[0][:300] if str(exc).strip() else name
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = retryable_status(status)
        # Error responses are not billed by OpenAI-compatible providers; they do count as calls.
        outcome = AttemptOutcome("error", status, charged=Usage(1), latency_s=latency, error_class=name, error=message)
        return Failure(outcome, retryable, retry_after(exc.response), not_sent=False)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout):
            # No connection, so no byte of the request left: recorded, but neither a call nor a cost (a benchmark
            # stopped with Ctrl-C saw 55 such attempts counted as calls of one run after its teacher server exited).
            # A run still stops after teacher.max_retries of them (TeacherUnreachable).
            outcome = AttemptOutcome(REFUSED, None, charged=Usage(), latency_s=latency, error_class=name, error=message)
            return Failure(outcome, retryable=True, wait=None, not_sent=True)
        # A timeout or a dropped connection may have been served and billed: charge the worst case.
        outcome = AttemptOutcome("error", None, charged=worst, latency_s=latency, error_class=name, error=message)
        return Failure(outcome, retryable=True, wait=None, not_sent=False)
    if isinstance(exc, Malformed | openai.APIResponseValidationError | ValueError):
        outcome = AttemptOutcome(
            "error", 200, charged=worst, latency_s=latency, error_class="MalformedResponse", error=message
        )
        return Failure(outcome, retryable=True, wait=None, not_sent=False)
    outcome = AttemptOutcome("error", None, charged=worst, latency_s=latency, error_class=name, error=message)
    return Failure(outcome, retryable=False, wait=None, not_sent=False)


def fatal_message(exc: Exception, config: TeacherConfig, url: str) -> str:
    return redact(_fatal_message(exc, config, url))


def _fatal_message(exc: Exception, config: TeacherConfig, url: str) -> str:
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
        detail = redact(str(exc)).splitlines()[0][:300]
        hint = " (a base model needs teacher.mode: completion)" if config.mode == "chat" else ""
        return f"teacher at {url} refused the request (HTTP {exc.status_code}: {detail}){hint}: fix the teacher config"
    return f"teacher call failed unexpectedly ({type(exc).__name__}: {exc}): this is a bug, please report it"


def misreport_message(url: str, found: Charge, worst: Usage, max_tokens: int) -> str:
    return (
        f"teacher at {url} reported {found.prompt_tokens} prompt + {found.completion_tokens} completion tokens "
        f"(${found.reported.cost_usd:.6f}) for a request whose worst case is {worst.tokens} tokens "
        f"(${worst.cost_usd:.6f}, max_tokens {max_tokens}): the provider misreports usage, so the budget cannot "
        "bound its spending; the answer is kept and charged as reported: check the provider's billing and "
        "teacher.base_url before rerunning"
    )


def answer_outcome(found: Charge, finish: str | None, latency_s: float, misreport: str | None) -> AttemptOutcome:
    """The ledger outcome of a 200 answer charged ``found`` (synchronous or batch line): flagged
    ``UsageOverReservation`` with ``misreport`` when its report exceeds the reservation, ``UsageUnknown`` when the
    report is missing or partial (charged the worst case)."""
    error_class = USAGE_OVER_RESERVATION if misreport else (None if found.usage_known else USAGE_UNKNOWN)
    note = misreport or (None if found.usage_known else "no or partial usage reported: charged the worst case")
    return AttemptOutcome(
        status="length" if finish == "length" else "ok",
        http_status=200,
        finish_reason=finish,
        prompt_tokens=found.prompt_tokens,
        completion_tokens=found.completion_tokens,
        cost_usd=found.reported.cost_usd,
        charged=found.charged,
        cached_tokens=found.cached_tokens,
        latency_s=latency_s,
        error_class=error_class,
        error=note,
    )


async def send(
    client: openai.AsyncOpenAI, config: TeacherConfig, request: TeacherRequest
) -> tuple[str, str | None, Any, Mapping[str, str]]:
    """One HTTP attempt: (text, finish reason, the usage object as received, the response headers). A 200
    without usable text raises :class:`Malformed`."""
    common: dict[str, Any] = {
        "model": config.model,
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
    if config.mode == "chat":
        assert request.messages is not None
        messages: Any = [{"role": r, "content": c} for r, c in request.messages]
        raw: Any = await client.chat.completions.with_raw_response.create(messages=messages, **common)
        kind: type[Any] = ChatCompletion
    else:
        raw = await client.completions.with_raw_response.create(prompt=request.prompt or "", **common)
        kind = Completion
    body: Any = raw.parse()  # the raw response keeps the headers (x-ratelimit-*) that the parsed body drops
    # A non-JSON body comes back as a plain string, a JSON body of the wrong shape as empty or odd fields.
    if not isinstance(body, kind) or not isinstance(body.choices, list) or not body.choices:
        raise Malformed("response has no choices")
    try:
        choice = body.choices[0]
        text = choice.message.content if kind is ChatCompletion else choice.text
        finish = choice.finish_reason
    except AttributeError as exc:
        raise Malformed(f"response has no text ({exc})") from None
    if not isinstance(text, str):
        raise Malformed("response has no text")
    text = checked_text(text, request.max_tokens)
    finish = redact_known(finish) if isinstance(finish, str) else None  # stored too: nothing echoed survives
    return text, finish, getattr(body, "usage", None), raw.headers


def checked_text(text: str, max_tokens: int) -> str:
    """A completion's text, refused (:class:`Malformed`: charged, recorded, retried, never parsed nor cached) when
    it is longer than ``max_tokens`` tokens can be, whatever its usage says; with any registered credential
    blanked (a teacher that echoes the key must not have it kept in the data)."""
    bound = MAX_CHARS_PER_TOKEN * max_tokens + _SLACK_CHARS
    if len(text) > bound:
        raise Malformed(
            f"completion of {len(text)} characters under max_tokens {max_tokens} (at most {bound} characters, "
            f"{MAX_CHARS_PER_TOKEN} per token): the provider ignored max_tokens or sent something else"
        )
    return redact_known(text)
