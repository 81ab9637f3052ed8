"""Seeded requests answered once: a repeat of a seeded request gets the completion its first copy got.

A seed promises the same completion for the same request, but a batched row's logits depend in their last bits
on what it was batched with (see ``_decoding``): in bf16 two copies of one seeded request, decoded in different
batches, can part at a near-tied token. That broke the pairing of a benchmark's arms, whose runs share one server
and send the same round-0 requests under one seed: the arms got different answers to identical requests
(docs/results.md, "Output repair on top of the default"). So this server remembers the latest seeded answers and
gives a repeat the first one's result, and identical seeded requests in flight at once are decoded once. Requests
without a seed are sampled afresh every time, as a client that sends none expects.

Only finished generations are remembered: one whose client went away, or that failed, is forgotten, and a copy
waiting on it decodes for itself.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_MEMO_SIZE = 4096
"""Seeded answers remembered (least recently used leave first): a benchmark of 6 runs x 150 calls asks fewer."""


def request_key(prompt: Any, **settings: Any) -> str:
    """What decides a completion: the prompt (or chat messages) and every sampling setting, seed included."""
    return json.dumps([prompt, settings], sort_keys=True, default=str)


class SeededAnswers:
    """The latest ``size`` answers by :func:`request_key`, and the ones being decoded (all on one event loop)."""

    def __init__(self, size: int = DEFAULT_MEMO_SIZE) -> None:
        if size < 0:
            raise ValueError(f"size must be at least 0, got {size}")
        self.size = size
        self._done: OrderedDict[str, Any] = OrderedDict()
        self._running: dict[str, asyncio.Future[Any]] = {}
        self.hits = 0

    async def answer(self, key: str | None, decode: Callable[[], Awaitable[T]]) -> T:
        """``decode()``'s result, or the result a request with the same ``key`` got (None: never shared)."""
        if key is None or self.size == 0:
            return await decode()
        while True:
            if key in self._done:
                self._done.move_to_end(key)
                self.hits += 1
                return self._done[key]
            running = self._running.get(key)
            if running is None:
                break
            found = await asyncio.shield(running)  # the first copy's outcome; None: it did not finish
            if found is not None:
                self.hits += 1
                return found
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        result: Any = None
        try:
            result = await decode()
            self._done[key] = result
            while len(self._done) > self.size:
                self._done.popitem(last=False)
            return result
        finally:
            del self._running[key]
            future.set_result(result)  # None when decode() raised: a waiting copy then decodes for itself
