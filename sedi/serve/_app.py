"""The OpenAI-compatible HTTP surface over an :class:`Engine`: validation, errors and response shapes.

Every error, including FastAPI's own validation errors and unknown paths, is answered in OpenAI's error
JSON shape with OpenAI's status codes, so that the official ``openai`` client raises its typed errors
(``BadRequestError``, ``NotFoundError``) and sedi's teacher code handles this server like any other.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sedi.serve._engine import Engine, GenerationCancelled, GenerationResult, InvalidRequest
from sedi.serve._limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit, error_body
from sedi.serve._memo import DEFAULT_MEMO_SIZE, SeededAnswers, request_key

DEFAULT_GENERATION_THREADS = 40
"""Requests inside the engine at once unless the server says otherwise (anyio's own default pool size)."""

DEFAULT_CHAT_MAX_TOKENS = 512
"""Chat requests without a token limit get this one (OpenAI's is the context; too slow on a CPU)."""

logger = logging.getLogger("sedi.serve")


class OpenAIError(Exception):
    """An error to send as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status)


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


def create_app(
    engine: Engine,
    *,
    max_tokens: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    memo_size: int = DEFAULT_MEMO_SIZE,
    generation_threads: int = DEFAULT_GENERATION_THREADS,
) -> FastAPI:
    """Build the app; it serves exactly ``engine.model_id`` and runs generation off the event loop.

    ``max_tokens`` caps what one request may ask for (400 beyond it; None: only the context length caps
    it), so that one client cannot hold a batch row for hours; ``max_body_bytes`` caps request bodies (413);
    ``memo_size`` seeded answers are remembered for repeats of their request (``_memo``; 0: none);
    ``generation_threads`` requests may be inside the engine at once (decoding or queued for a batch place).
    """
    if generation_threads < 1:
        raise ValueError(f"generation_threads must be at least 1, got {generation_threads}")
    app = FastAPI(title="sedi local teacher", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    # Each generation holds a worker thread until it ends. anyio's shared pool has 40, so without a pool of our own
    # a server with --max-batch 96 (six benchmark runs of 16) never had more than 40 rows decoding: seen on
    # 2026-12-07, 40 requests in the engine and 56 waiting in front of it. Made on first use: anyio 3 can only
    # make a limiter inside the event loop.
    @functools.cache
    def generation_pool() -> anyio.CapacityLimiter:
        return anyio.CapacityLimiter(generation_threads)

    app.state.seeded = seeded = SeededAnswers(memo_size)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    token_cap = max_tokens  # the endpoints below use max_tokens for the request's own value

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
        # Exception text can hold paths, prompts or library internals: it goes to the log, not the client.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "internal server error")

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

    def check_max_tokens(requested: int | None, param: str) -> None:
        if token_cap is not None and requested is not None and requested > token_cap:
            raise OpenAIError(
                400, f"{param} is {requested}, above this server's limit of {token_cap} tokens", param=param
            )

    async def run(
        request: Request, prompt: str | list[dict[str, Any]], req: _SamplingFields, max_tokens: int
    ) -> GenerationResult:
        settings: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "stop": req.stop,
            "seed": req.seed,
            "presence_penalty": req.presence_penalty or 0.0,
            "frequency_penalty": req.frequency_penalty or 0.0,
        }
        key = None if req.seed is None else request_key(prompt, **settings)
        return await seeded.answer(key, functools.partial(decode, request, prompt, settings))

    async def decode(
        request: Request, prompt: str | list[dict[str, Any]], settings: dict[str, Any]
    ) -> GenerationResult:
        cancel = threading.Event()
        call = functools.partial(engine.generate, prompt, cancel=cancel, **settings)

        async def cancel_on_disconnect() -> None:
            # The body is read, so the next ASGI message is http.disconnect: when the client gives up
            # (a timeout, a killed run), its row leaves the batch instead of decoding for nobody. Waiting
            # for the message is what request.is_disconnected() polls for, without the polling.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancel.set()

        failure: Exception | None = None
        async with anyio.create_task_group() as watch:
            watch.start_soon(cancel_on_disconnect)
            try:
                # In a worker thread: a generation takes seconds and must not stall other requests.
                result: GenerationResult = await anyio.to_thread.run_sync(call, limiter=generation_pool())
            except Exception as exc:  # raised below, outside the task group (which would wrap it)
                failure = exc
            watch.cancel_scope.cancel()
        if isinstance(failure, InvalidRequest):
            raise OpenAIError(400, str(failure)) from failure
        if isinstance(failure, GenerationCancelled):
            logger.info("%s: the client disconnected; generation stopped", request.url.path)
            raise OpenAIError(499, "client closed the request") from failure
        if failure is not None:
            raise failure
        return result

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
    async def completions(req: CompletionRequest, request: Request) -> dict[str, Any]:
        check_common(req)
        check_max_tokens(req.max_tokens, "max_tokens")
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise OpenAIError(400, "send exactly one prompt per request", param="prompt")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        result = await run(request, prompt, req, 16 if req.max_tokens is None else req.max_tokens)
        return envelope("cmpl", "text_completion", {"text": result.text}, result)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> dict[str, Any]:
        check_common(req)
        check_max_tokens(req.max_tokens, "max_tokens")
        check_max_tokens(req.max_completion_tokens, "max_completion_tokens")
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
            max_tokens = min(DEFAULT_CHAT_MAX_TOKENS, token_cap or DEFAULT_CHAT_MAX_TOKENS)
            if engine.context_length is not None:  # the default must never overflow the context
                # Tokenizing a long chat takes milliseconds of CPU: off the event loop, like generation.
                prompt_tokens = await anyio.to_thread.run_sync(engine.count_tokens, messages)
                max_tokens = max(1, min(max_tokens, engine.context_length - prompt_tokens))
        result = await run(request, messages, req, max_tokens)
        return envelope(
            "chatcmpl", "chat.completion", {"message": {"role": "assistant", "content": result.text}}, result
        )

    return app
