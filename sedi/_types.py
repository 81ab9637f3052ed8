"""The run's shared vocabulary: what a request may cost or cost, and what a teacher call returned or how it
ended. Plain dataclasses with no imports from the rest of sedi, so the store, the ledger and the teacher client
can all speak them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Calls, tokens and dollars: what a request may cost, or what was spent."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls, self.tokens + other.tokens, self.cost_usd + other.cost_usd)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.calls - other.calls, self.tokens - other.tokens, self.cost_usd - other.cost_usd)


@dataclass(frozen=True)
class CachedResponse:
    """A teacher response as stored in the cache."""

    request_key: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class AttemptOutcome:
    """How one HTTP attempt ended, for its ledger row."""

    status: str
    http_status: int | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    charged: Usage = Usage()
    latency_s: float | None = None
    error_class: str | None = None
    error: str | None = None
