"""A fault-injecting OpenAI-compatible server (raw ASGI) for money-safety tests.

Serve it with ``tests.servers.serve_app(FaultServer())``. Each request's fault is chosen by a tag in its
prompt (or last chat message), so a concurrent run stays deterministic whatever the arrival order:

- ``[fault:NAME]`` applies fault NAME to every request with that prompt;
- ``[fault:NAMEx2]`` applies it to the first 2 requests with that prompt, later ones are answered normally.

Without a tag ``FaultServer.default`` applies (``"ok"`` unless a test switches it, e.g. to ``"503"``).
The server counts every request it receives (``requests``, ``by_fault``), independently of the client.

Faults (``FAULTS``): ``ok``; usage ``over_usage`` (100,000 completion tokens), ``negative_usage``,
``empty_usage`` (``usage: {}``), ``partial_usage`` (no completion_tokens), ``no_usage``; ``429`` with
``Retry-After: 0``; ``429_bad`` with ``Retry-After: 30s``; ``429_weird`` with a Retry-After taken from
``FaultServer.weird_retry_after`` (negative, huge, inf, NaN...); ``500`` and ``503``; ``slow`` (answers
after ``slow_s``, longer than the client timeout); ``truncated_json`` (a 200 whose JSON is cut off);
``empty_text`` (a 200 whose text is ``""``, with normal usage); ``huge_text`` (a 200 of ``HUGE_TEXT_CHARS``
characters whatever max_tokens says, with usage claiming max_tokens completion tokens).

Echo mode, for the secrets tests: ``echo_401`` and ``echo_500`` answer with an error body, and ``echo_text`` with a
200 completion, that quote back what a careless provider might: every request header as text (the Authorization
header included), a Basic-auth header decoded to ``user:password``, and the strings in ``FaultServer.echo`` (what
the provider knows of its client, e.g. the key). :class:`EchoFirst` puts the same echoes in front of another app.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.servers import read_body

FAULTS = (
    "ok",
    "over_usage",
    "negative_usage",
    "empty_usage",
    "partial_usage",
    "no_usage",
    "429",
    "429_bad",
    "429_weird",
    "500",
    "503",
    "slow",
    "truncated_json",
    "empty_text",
    "huge_text",
    "echo_401",
    "echo_500",
    "echo_text",
)
OVER_REPORTED_COMPLETION_TOKENS = 100_000
HUGE_TEXT_CHARS = 1_000_000
_TAG = re.compile(r"\[fault:([a-z0-9_]+?)(?:x(\d+))?\]")


def answer_text(prompt: str) -> str:
    """The text the server answers a prompt with (tests compare cached answers against it)."""
    return f"Task 2: answer to {len(prompt)} characters."


@dataclass
class FaultServer:
    """The ASGI app. Attributes may be switched while it serves (they are read per request)."""

    default: str = "ok"
    slow_s: float = 0.6
    weird_retry_after: str = "-5"
    pad_text: int = 0  # characters appended to every answer (large answers fill a capped database)
    echo: tuple[str, ...] = ()  # what the echo faults quote besides the request's headers
    requests: int = 0
    by_fault: Counter[str] = field(default_factory=Counter)
    _per_prompt: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _choose(self, prompt: str) -> str:
        with self._lock:
            self.requests += 1
            seen = self._per_prompt[prompt]
            self._per_prompt[prompt] += 1
            match = _TAG.search(prompt)
            if match is None:
                fault = self.default
            else:
                limit = match.group(2)
                fault = match.group(1) if limit is None or seen < int(limit) else "ok"
            self.by_fault[fault] += 1
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {FAULTS}")
        return fault

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        chat = scope["path"].endswith("/chat/completions")
        prompt = _prompt(request, chat)
        fault = self._choose(prompt)
        if fault.startswith("echo_"):
            status, headers, payload = echo_response(fault, scope, self.echo, chat)
        else:
            status, headers, payload = await self._respond(fault, request, prompt, chat)
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        head += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": raw})

    async def _respond(
        self, fault: str, request: dict[str, Any], prompt: str, chat: bool
    ) -> tuple[int, dict[str, str], Any]:
        if fault in ("429", "429_bad", "429_weird"):
            wait = {"429": "0", "429_bad": "30s", "429_weird": self.weird_retry_after}[fault]
            return 429, {"retry-after": wait}, {"error": {"message": "rate limited", "type": "rate_limit"}}
        if fault in ("500", "503"):
            return int(fault), {}, {"error": {"message": f"server error {fault}", "type": "server_error"}}
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        max_tokens = int(request.get("max_tokens") or 16)
        text = "" if fault == "empty_text" else answer_text(prompt) + "x" * self.pad_text
        if fault == "huge_text":
            text = ("Task 2: " + "y" * HUGE_TEXT_CHARS)[:HUGE_TEXT_CHARS]
        prompt_tokens, completion_tokens = len(prompt.encode()) // 4 + 1, min(max_tokens, 8)
        usage: dict[str, Any] | None = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if fault == "over_usage":
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": OVER_REPORTED_COMPLETION_TOKENS}
        elif fault == "negative_usage":
            usage = {"prompt_tokens": -5, "completion_tokens": -7, "total_tokens": -12}
        elif fault == "empty_usage":
            usage = {}
        elif fault == "partial_usage":
            usage = {"prompt_tokens": prompt_tokens}
        elif fault == "no_usage":
            usage = None
        elif fault == "huge_text":
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        body: dict[str, Any] = {
            "id": "cmpl-fault",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": str(request.get("model", "m")),
            "choices": [choice],
        }
        if usage is not None:
            body["usage"] = usage
        if fault == "truncated_json":
            return 200, {}, json.dumps(body).encode()[:-25]
        return 200, {}, body


def _prompt(request: dict[str, Any], chat: bool) -> str:
    if chat:
        messages = request.get("messages") or [{}]
        content = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
        return content if isinstance(content, str) else ""
    prompt = request.get("prompt", "")
    return prompt if isinstance(prompt, str) else ""


def tagged(fault: str, index: int, times: int | None = None) -> str:
    """A prompt carrying a fault tag (``times``: only its first N requests get the fault)."""
    suffix = "" if times is None else f"x{times}"
    return f"Task 1: item {index} [fault:{fault}{suffix}]\nTask 2:"


def echoed(scope: dict[str, Any], extra: tuple[str, ...]) -> str:
    """What an echoing provider quotes: the request's headers as text, Basic auth decoded, and ``extra``."""
    lines = [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in scope.get("headers", [])]
    for key, value in scope.get("headers", []):
        if key.lower() == b"authorization" and value.lower().startswith(b"basic "):
            lines.append("decoded basic credentials " + base64.b64decode(value[6:].strip()).decode("latin-1"))
    lines += [f"upstream failed for key {item} (Bearer {item})" for item in extra]
    return " | ".join(lines)


def echo_response(
    fault: str, scope: dict[str, Any], extra: tuple[str, ...], chat: bool
) -> tuple[int, dict[str, str], Any]:
    """The answer of an echo fault (see the module docstring); the echo also goes out as a response header."""
    text = echoed(scope, extra)
    headers = {"x-echo": text.encode("ascii", "replace").decode()[:4000]}
    if fault in ("echo_401", "echo_500"):
        status = int(fault[-3:])
        return status, headers, {"error": {"message": f"request rejected: {text}", "type": "echo", "code": status}}
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
    return 200, headers, {"id": "cmpl-echo", "object": "text_completion", "created": 0, "model": "m",
                          "choices": [choice], "usage": usage}  # fmt: skip


@dataclass
class EchoFirst:
    """An ASGI app answering its first requests with the echo faults in ``plan`` (in order), the rest with ``app``."""

    app: Any
    plan: list[str]
    echo: tuple[str, ...] = ()
    answered: Counter[str] = field(default_factory=Counter)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.endswith("completions") or not self.plan:
            await self.app(scope, receive, send)
            return
        fault = self.plan.pop(0)
        self.answered[fault] += 1
        await read_body(receive)
        status, headers, payload = echo_response(fault, scope, self.echo, path.endswith("/chat/completions"))
        raw = json.dumps(payload).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        head += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": raw})
