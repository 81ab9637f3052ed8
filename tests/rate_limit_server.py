"""A rate-limiting front for an OpenAI-compatible ASGI app, enforcing limits the way providers do.

``RateLimited(app, requests=N, tokens=T, window_s=W)`` admits at most N requests and T tokens per window of
W seconds (a fixed window, opened by the first request after the last one closed), counting each request's
tokens as its prompt's UTF-8 bytes plus ``max_tokens`` (as a provider estimates it; never more than the
client's reservation). Beyond a limit it answers 429 with ``retry-after`` and ``retry-after-ms``. Every answer
carries OpenAI's ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers
(durations like "1.234s" or "850ms") unless ``headers=False``. It counts what it admitted and refused.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.servers import read_body, replaying


def duration(seconds: float) -> str:
    """A duration the way OpenAI writes one: "850ms" below a second, else "1.234s" (or "1m2.5s")."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s" if minutes else f"{rest:.3f}s"


def request_tokens(body: dict[str, Any]) -> int:
    texts = [m.get("content", "") for m in body.get("messages") or [] if isinstance(m, dict)]
    texts.append(body.get("prompt") or "")
    return sum(len(str(t).encode()) for t in texts) + int(body.get("max_tokens") or 16)


@dataclass
class RateLimited:
    app: Any
    requests: int
    tokens: int = 10**9
    window_s: float = 2.0
    headers: bool = True
    admitted: int = 0
    refused: int = 0
    _opened: float | None = None
    _count: int = 0
    _used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _admit(self, tokens: int) -> tuple[bool, list[tuple[bytes, bytes]], float]:
        with self._lock:
            now = time.monotonic()
            if self._opened is None or now >= self._opened + self.window_s:
                self._opened, self._count, self._used = now, 0, 0
            fits = self._count + 1 <= self.requests and self._used + tokens <= self.tokens
            if fits:
                self._count, self._used, self.admitted = self._count + 1, self._used + tokens, self.admitted + 1
            else:
                self.refused += 1
            reset = self._opened + self.window_s - now
            values = {
                "limit-requests": str(self.requests),
                "limit-tokens": str(self.tokens),
                "remaining-requests": str(self.requests - self._count),
                "remaining-tokens": str(self.tokens - self._used),
                "reset-requests": duration(reset),
                "reset-tokens": duration(reset),
            }
        head = [(f"x-ratelimit-{k}".encode(), v.encode()) for k, v in values.items()] if self.headers else []
        return fits, head, reset

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        fits, head, reset = self._admit(request_tokens(parsed if isinstance(parsed, dict) else {}))
        if not fits:
            raw = json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode()
            head += [
                (b"retry-after", str(max(round(reset), 1)).encode()),
                (b"retry-after-ms", str(max(round(reset * 1000), 1)).encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": head})
            await send({"type": "http.response.body", "body": raw})
            return
        replay = replaying(body, receive)

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *head]}
            await send(message)

        await self.app(scope, replay, with_headers)
