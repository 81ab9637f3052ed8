"""The OpenAI-compatible HTTP surface over an :class:`Engine`: validation, errors and response shapes.

Every error, including FastAPI's own validation errors and unknown paths, is answered in OpenAI's error
JSON shape with OpenAI's status codes, so that the official ``openai`` client raises its typed errors
(``BadRequestError``, ``NotFoundError``) and sedi's teacher code handles this server like any other.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sedi.serve._engine import Engine, GenerationResult, InvalidRequest

DEFAULT_CHAT_MAX_TOKENS = 512
"""Chat requests without a token limit get this one (OpenAI's is the context; too slow on a CPU)."""


class OpenAIError(Exception):
    """An error to send as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class _SamplingFields(BaseModel):
    # Clients send fields this server does not know (user, logit_bias, metadata...): ignore them.
    # None means "not given" for every optional field, as some clients send explicit nulls.
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stream: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. "name": passed on to the chat template

    role: str
    content: str | list[dict[str, Any]] | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message as chat templates expect it: text content, content parts joined."""
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            texts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise OpenAIError(400, "only text content parts are supported", param="messages")
                texts.append(part["text"])
            message["content"] = "\n".join(texts)
        elif self.content is None:
            message["content"] = ""
        return message


class ChatRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def create_app(engine: Engine) -> FastAPI:
    """Build the app; it serves exactly ``engine.model_id`` and runs generation off the event loop."""
    app = FastAPI(title="sedi local teacher", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return _error_response(exc.status, exc.message, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        param = ".".join(str(part) for part in first if part != "body") or None
        return _error_response(400, "invalid request: " + "; ".join(problems), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error_response(exc.status_code, message, "not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    def model_card() -> dict[str, Any]:
        return {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "sedi"}

    def check_common(req: _SamplingFields) -> None:
        if req.model != engine.model_id:
            raise OpenAIError(
                404,
                f"The model '{req.model}' does not exist; this server serves '{engine.model_id}'.",
                code="model_not_found",
                param="model",
            )
        if req.stream:
            raise OpenAIError(400, "streaming is not supported by this server; send stream=false", param="stream")
        if req.n is not None and req.n != 1:
            raise OpenAIError(400, "only n=1 is supported by this server", param="n")

    async def run(prompt: str | list[dict[str, Any]], req: _SamplingFields, max_tokens: int) -> GenerationResult:
        call = functools.partial(
            engine.generate,
            prompt,
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=req.stop,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
        )
        try:
            # In a worker thread: a generation takes seconds and must not stall other requests.
            return await anyio.to_thread.run_sync(call)
        except InvalidRequest as exc:
            raise OpenAIError(400, str(exc)) from exc

    def envelope(prefix: str, kind: str, content: dict[str, Any], result: GenerationResult) -> dict[str, Any]:
        """The OpenAI response body around one choice; ``content`` is its text or message."""
        choice = {"index": 0, **content, "finish_reason": result.finish_reason, "logprobs": None}
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": engine.model_id,
            "choices": [choice],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        if model_id != engine.model_id:
            raise OpenAIError(404, f"The model '{model_id}' does not exist.", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> dict[str, Any]:
        check_common(req)
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise OpenAIError(400, "send exactly one prompt per request", param="prompt")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        result = await run(prompt, req, 16 if req.max_tokens is None else req.max_tokens)
        return envelope("cmpl", "text_completion", {"text": result.text}, result)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> dict[str, Any]:
        check_common(req)
        if not engine.has_chat_template:
            raise OpenAIError(
                400,
                f"model '{engine.model_id}' has no chat template, so chat messages cannot be formatted; "
                "use the /v1/completions endpoint instead (set `teacher.mode: completion`)",
                param="messages",
            )
        messages = [message.as_template_input() for message in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens
        if max_tokens is None:
            max_tokens = DEFAULT_CHAT_MAX_TOKENS
            if engine.context_length is not None:  # the default must never overflow the context
                room = engine.context_length - engine.count_tokens(messages)
                max_tokens = max(1, min(max_tokens, room))
        result = await run(messages, req, max_tokens)
        return envelope(
            "chatcmpl", "chat.completion", {"message": {"role": "assistant", "content": result.text}}, result
        )

    return app
