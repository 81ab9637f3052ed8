"""Hard budget caps with worst-case reservation.

Before a request is sent it reserves its worst case (one call, an upper bound of its prompt tokens
plus ``max_tokens``, and the matching cost). The reservation is refused if spent + reserved + worst
could exceed any cap, so the caps hold even with many requests in flight. After the attempt ends the
reservation is replaced by what was actually charged.

A request that does not fit while others are in flight waits for them to settle (their real usage is
usually far below their worst case) and is refused only when it does not fit with nothing in flight,
so a run uses its budget fully instead of stopping at the first pessimistic refusal.

Check-and-add runs on the event loop thread with no ``await`` in between, so it is atomic without a lock.
"""

from __future__ import annotations

import asyncio

from sedi.config.teacher import BudgetConfig, Prices
from sedi.exceptions import BudgetExceeded
from sedi.store.db import Usage
from sedi.teacher.request import TeacherRequest

# Upper bound of the tokens a chat template adds per message and per request. Generous on purpose:
# an over-estimate only makes the run stop a little earlier; an under-estimate could break the cap.
_CHAT_TOKENS_PER_MESSAGE = 16
_REQUEST_OVERHEAD_TOKENS = 16


def prompt_token_bound(text_parts: list[str], tokens_per_byte: float = 1.0) -> int:
    """An upper bound of the prompt tokens of a request made of these texts.

    Byte-level BPE and byte-fallback tokenizers emit at most one token per UTF-8 byte, so the byte
    count (plus template overhead) bounds every tokenizer in common use without knowing which one.
    """
    n_bytes = sum(len(part.encode("utf-8")) for part in text_parts)
    overhead = _REQUEST_OVERHEAD_TOKENS + _CHAT_TOKENS_PER_MESSAGE * max(len(text_parts) - 1, 0)
    return int(n_bytes * tokens_per_byte) + 1 + overhead


def cost_of(prompt_tokens: int, completion_tokens: int, prices: Prices | None, cached_tokens: int = 0) -> float:
    """USD of a call. ``cached_tokens`` of the prompt tokens cost ``prices.cached_prompt`` when it is set (the prompt
    rate otherwise); a worst case passes none, so a reservation never assumes a cache hit."""
    if prices is None:
        return 0.0
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = prices.prompt if prices.cached_prompt is None else prices.cached_prompt
    return (
        (prompt_tokens - cached) * prices.prompt + cached * cached_rate + completion_tokens * prices.completion
    ) / 1_000_000


def worst_case(request: TeacherRequest, prices: Prices | None, tokens_per_byte: float = 1.0) -> Usage:
    """What ``request`` can cost at most, which the budget reserves before it may leave, on the synchronous path
    (``teacher.prices``) and in a batch job (:func:`batch_prices`): one call, the prompt's token bound plus
    ``max_tokens``, and their cost with no prompt-cache discount."""
    prompt = prompt_token_bound(request.texts(), tokens_per_byte)
    return Usage(1, prompt + request.max_tokens, cost_of(prompt, request.max_tokens, prices))


def batch_prices(prices: Prices | None) -> Prices | None:
    """The prices of a request sent through the Batch API: each rate less ``prices.batch_api_discount``."""
    if prices is None:
        return None
    share = 1.0 - prices.batch_api_discount
    cached = None if prices.cached_prompt is None else prices.cached_prompt * share
    return prices.model_copy(
        update={"prompt": prices.prompt * share, "completion": prices.completion * share, "cached_prompt": cached}
    )


class Budget:
    """Tracks spent and reserved usage against the caps of a :class:`BudgetConfig`."""

    def __init__(self, caps: BudgetConfig, spent: Usage) -> None:
        self.caps = caps
        self.spent = spent
        self.reserved = Usage()
        self.in_flight = 0
        self._settled = asyncio.Event()

    def _refusal(self, worst: Usage) -> BudgetExceeded | None:
        total = self.spent + self.reserved + worst
        checks = (
            ("max_calls", self.caps.max_calls, total.calls, self.spent.calls),
            ("max_tokens", self.caps.max_tokens, total.tokens, self.spent.tokens),
            ("max_cost_usd", self.caps.max_cost_usd, total.cost_usd, self.spent.cost_usd),
        )
        for name, cap, would_be, spent in checks:
            if cap is not None and would_be > cap + 1e-12:
                return BudgetExceeded(
                    f"budget exhausted: budget.{name} is {cap} and {spent:g} is spent, so the next request "
                    f"(worst case {would_be - spent:g} with those in flight) could exceed it: raise budget.{name} "
                    "and run the same command again to continue",
                    cap=name,
                )
        return None

    async def reserve(self, worst: Usage) -> Usage:
        """Reserve ``worst``, waiting while requests in flight may still free room; raise
        :class:`BudgetExceeded` once it cannot fit even with nothing in flight."""
        while True:
            refusal = self._refusal(worst)
            if refusal is None:
                self.reserved = self.reserved + worst
                self.in_flight += 1
                return worst
            if self.in_flight == 0:
                raise refusal
            self._settled.clear()
            await self._settled.wait()

    def reserve_now(self, worst: Usage) -> Usage:
        """Reserve ``worst`` or raise :class:`BudgetExceeded` at once, without waiting for requests in flight (a batch
        job reserves all its lines before it is created, so nothing would settle while it waited)."""
        refusal = self._refusal(worst)
        if refusal is not None:
            raise refusal
        self.reserved = self.reserved + worst
        self.in_flight += 1
        return worst

    def adopt(self, charged: Usage) -> Usage:
        """Hold again as a reservation what an earlier process charged for a request it left unfinished (its batch
        job still runs): moved from spent to reserved, never refused (it was paid for), settled as any other."""
        self.spent = self.spent - charged
        self.reserved = self.reserved + charged
        self.in_flight += 1
        return charged

    def settle(self, reservation: Usage, charged: Usage) -> None:
        """Replace a reservation by what the attempt was actually charged."""
        self.reserved = self.reserved - reservation
        self.spent = self.spent + charged
        self.in_flight -= 1
        self._settled.set()

    def account_for(self, spent: Usage) -> None:
        """Raise what counts as spent to at least ``spent`` (each of calls, tokens, cost); never lowers it."""
        self.spent = Usage(
            max(self.spent.calls, spent.calls),
            max(self.spent.tokens, spent.tokens),
            max(self.spent.cost_usd, spent.cost_usd),
        )
