"""Run an ASGI app on a real loopback port in a thread, counting what reaches it.

Tests use it to check claims at the server side ("no more than N requests reached the server"),
not by trusting the client's own ledger.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

ASGIApp = Any


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    authorization: str


@dataclass
class CountingMiddleware:
    """Counts and records every HTTP request, optionally holding each one for ``delay`` seconds."""

    app: ASGIApp
    delay: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        with self._lock:
            self.counts[scope["path"]] += 1
            self.seen.append(Seen(scope["path"], json.loads(body) if body else {}, headers.get("authorization", "")))
            self.in_flight += 1
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            await self.app(scope, replay, send)
        finally:
            with self._lock:
                self.in_flight -= 1


@dataclass
class Served:
    base_url: str
    counter: CountingMiddleware


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_app(app: ASGIApp, *, delay: float = 0.0) -> Iterator[Served]:
    counter = CountingMiddleware(app, delay=delay)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(counter, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}/v1", counter)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
