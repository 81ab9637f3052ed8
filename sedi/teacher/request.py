"""What a teacher request and its response are, and the content address the response cache uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from sedi.base.files import dumps

# Bump when the meaning of a cached response changes; old cache rows then stop matching.
_CACHE_VERSION = 1


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
