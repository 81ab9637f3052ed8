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


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request, however many messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def replaying(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that hands a wrapped app the body already read, then the real messages."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:  # tests send malformed bodies on purpose; the app must answer them, not us
        return {}
    return parsed if isinstance(parsed, dict) else {}


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
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        with self._lock:
            self.counts[scope["path"]] += 1
            self.seen.append(Seen(scope["path"], _json_or_empty(body), headers.get("authorization", "")))
            self.in_flight += 1
        replay = replaying(body, receive)

        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            await self.app(scope, replay, send)
        finally:
            with self._lock:
                self.in_flight -= 1


@dataclass
class Served:
    base_url: str  # ends in /v1, as the openai client wants it
    counter: CountingMiddleware

    @property
    def request_counts(self) -> Counter[str]:
        """Requests that reached the server, by path (e.g. ``"/v1/completions"``)."""
        return self.counter.counts


class ServerThread:
    """uvicorn in a daemon thread on a socket bound up front (port 0: no free-port race)."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def serve_app(app: ASGIApp, *, delay: float = 0.0) -> Iterator[Served]:
    """Serve ``app`` on a loopback port, counting every request; ``delay`` holds each one that long."""
    counter = CountingMiddleware(app, delay=delay)
    with ServerThread(counter) as running:
        yield Served(f"http://127.0.0.1:{running.port}/v1", counter)
