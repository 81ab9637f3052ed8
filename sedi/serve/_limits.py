"""Request body size limit as plain ASGI middleware, answering in OpenAI's error shape.

uvicorn and FastAPI accept bodies of any size and FastAPI parses them whole, so without a limit one client
could make the server hold gigabytes. A completion prompt for this server is a few kilobytes (a full
2048-token context is about 10 KB of text), so 1 MiB leaves room for any honest request.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1 << 20


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's ``{"error": {...}}`` body; the ``openai`` client raises its typed errors from it."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BodySizeLimit:
    """Answers 413 when a body exceeds ``max_bytes``: at once from Content-Length, or while reading a
    chunked body (read here, at most ``max_bytes``, then replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body larger than this server's limit of {self.max_bytes} bytes"
        response = JSONResponse(error_body(413, message, "request_too_large"), status_code=413)
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that first returns ``messages``, then whatever the server sends next (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
