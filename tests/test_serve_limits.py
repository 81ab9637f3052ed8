"""Hardening of the embedded teacher's HTTP surface: limits, disconnects, blocking work, error text."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from sedi.serve import Engine, create_app
from tests.servers import Served, serve_app

MESSAGES: list[Any] = [{"role": "user", "content": "Write a short poem about the sea."}]


class Spy:
    """An engine wrapper that records what reaches the engine and can block or fail on demand."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model_id, self.has_chat_template = engine.model_id, engine.has_chat_template
        self.context_length = engine.context_length
        self.max_tokens_seen: list[int] = []
        self.counting = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    def count_tokens(self, prompt: Any) -> int:
        self.counting.set()
        assert self.release.wait(30)
        return int(self.engine.count_tokens(prompt))

    def generate(self, prompt: Any, **kwargs: Any) -> Any:
        self.max_tokens_seen.append(kwargs["max_tokens"])
        if self.fail_with is not None:
            raise self.fail_with
        return self.engine.generate(prompt, **kwargs)


def api(server: Served, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=timeout)


@pytest.fixture
def spy(tiny_engine: Any) -> Spy:
    return Spy(tiny_engine)


@pytest.fixture
def capped(spy: Spy) -> Iterator[Served]:
    with serve_app(create_app(spy, max_tokens=64, max_body_bytes=4096)) as served:  # type: ignore[arg-type]
        yield served


def test_max_tokens_above_the_cap_is_refused_before_the_engine(capped: Served, spy: Spy) -> None:
    client = api(capped)
    for ask in ({"max_tokens": 10**9}, {"max_tokens": 65}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="tiny-chat", prompt="Write a", **ask)  # type: ignore[call-overload]
        assert refused.value.param == "max_tokens" and "limit of 64" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_completion_tokens=10**9)
    assert refused.value.param == "max_completion_tokens"
    assert spy.max_tokens_seen == []  # nothing reached the engine

    done = client.completions.create(model="tiny-chat", prompt="Write a", max_tokens=64, temperature=0)
    assert done.usage is not None and done.usage.completion_tokens == 64
    client.chat.completions.create(model="tiny-chat", messages=MESSAGES, temperature=0)  # no limit given
    assert spy.max_tokens_seen == [64, 64]  # the chat default (512) is lowered to the cap


def test_request_bodies_over_the_limit_get_413(capped: Served, spy: Spy) -> None:
    with pytest.raises(openai.APIStatusError) as big:
        api(capped).completions.create(model="tiny-chat", prompt="word " * 1000, max_tokens=4)
    assert big.value.status_code == 413 and big.value.code == "request_too_large"
    assert big.value.type == "invalid_request_error"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"model": "tiny-chat", "max_tokens": 4, "prompt": "'
        for _ in range(100):
            yield b"word " * 20
        yield b'"}'

    raw = httpx2.post(capped.base_url + "/completions", content=chunks(), headers={"content-type": "application/json"})
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"
    assert spy.max_tokens_seen == []
    small = api(capped).completions.create(model="tiny-chat", prompt="word " * 100, max_tokens=4)
    assert small.usage is not None and small.usage.completion_tokens == 4


def test_default_body_limit_is_one_mebibyte(tiny_server: Served) -> None:
    body = b'{"model": "tiny-chat", "max_tokens": 4, "prompt": "' + b"x" * (1 << 20) + b'"}'
    raw = httpx2.post(
        tiny_server.base_url + "/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert raw.status_code == 413


def test_token_counting_runs_off_the_event_loop(capped: Served, spy: Spy) -> None:
    spy.release.clear()  # count_tokens now blocks, as a slow tokenizer would
    replies: list[Any] = []
    chat = threading.Thread(
        target=lambda: replies.append(
            api(capped).chat.completions.create(model="tiny-chat", messages=MESSAGES, temperature=0)
        )
    )
    chat.start()
    try:
        assert spy.counting.wait(30)
        # Had count_tokens run on the event loop, the server could not answer anything now.
        assert [m.id for m in api(capped, timeout=5).models.list().data] == ["tiny-chat"]
    finally:
        spy.release.set()
    chat.join(timeout=60)
    assert replies and replies[0].usage.completion_tokens == 64


def test_internal_errors_are_logged_not_echoed(capped: Served, spy: Spy, caplog: pytest.LogCaptureFixture) -> None:
    spy.fail_with = RuntimeError("secret detail: /home/someone/.cache token=abc123")
    with caplog.at_level(logging.ERROR, logger="sedi.serve"), pytest.raises(openai.InternalServerError) as failed:
        api(capped).completions.create(model="tiny-chat", prompt="Write a", max_tokens=4)
    assert failed.value.status_code == 500
    assert failed.value.response.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert "secret" not in failed.value.response.text
    assert any("secret detail" in str(record.exc_info) for record in caplog.records)


@pytest.fixture
def own_engine(tiny_model_dir: Path) -> Engine:
    """A private engine: this test pauses its scheduler and counts its forward passes."""
    return Engine.load(str(tiny_model_dir), device="cpu")


def test_a_client_that_disconnects_stops_its_generation(own_engine: Engine) -> None:
    forwards: list[int] = []
    own_engine.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    with serve_app(create_app(own_engine)) as served:
        gave_up: list[Exception] = []

        def impatient() -> None:
            try:
                api(served, timeout=0.5).completions.create(model="tiny-chat", prompt="Write a", max_tokens=1900)
            except openai.APITimeoutError as exc:
                gave_up.append(exc)

        client = threading.Thread(target=impatient)
        with own_engine.scheduler.paused():  # the model is busy: the request waits in the queue
            client.start()
            deadline = time.monotonic() + 30
            while not own_engine.scheduler.queued() and time.monotonic() < deadline:
                time.sleep(0.005)
            (job,) = own_engine.scheduler.queued()
            client.join(timeout=30)
            assert gave_up  # the client timed out and closed its connection
            assert job.cancel.wait(10)  # the server noticed
        started = time.monotonic()
        done = api(served, timeout=30).completions.create(
            model="tiny-chat", prompt="Write a", max_tokens=4, temperature=0
        )
        assert done.usage is not None and done.usage.completion_tokens == 4
        assert time.monotonic() - started < 10
    # The abandoned request never decoded: one prefill and 3 decoding steps, all for the second one.
    assert len(forwards) == 4
    assert own_engine.scheduler.stats.cancelled == 1


class Crowd:
    """A scripted engine whose generations wait until ``expected`` of them are inside it at once (or 10 s pass),
    recording the most that ever were: how many requests the server lets reach the engine together."""

    model_id, has_chat_template, context_length = "crowd", False, None

    def __init__(self, expected: int) -> None:
        self.expected, self.inside, self.peak = expected, 0, 0
        self.changed = threading.Condition()

    def count_tokens(self, prompt: Any) -> int:
        return 1

    def generate(self, prompt: Any, **kwargs: Any) -> Any:
        from sedi.serve._engine import GenerationResult

        with self.changed:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.inside >= self.expected, timeout=10)
        with self.changed:
            self.inside -= 1
        return GenerationResult("ok", "stop", 1, 1)


@pytest.mark.parametrize(("threads", "peak"), [(None, 40), (64, 56)])
def test_more_requests_than_anyios_default_pool_reach_the_engine_together(threads: int | None, peak: int) -> None:
    # 56 requests at once: with anyio's shared pool of 40 threads only 40 reached the engine, so a server with
    # --max-batch 96 never decoded more than 40 rows; the server now sizes its own pool (twice max_batch).
    engine = Crowd(expected=56)
    limits = {} if threads is None else {"generation_threads": threads}
    with serve_app(create_app(engine, **limits)) as served:  # type: ignore[arg-type]
        client = api(served, timeout=60)
        answers: list[str] = []

        def ask() -> None:
            done = client.completions.create(model="crowd", prompt="x", max_tokens=1)
            answers.append(done.choices[0].text)

        askers = [threading.Thread(target=ask) for _ in range(56)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(60)
    assert answers == ["ok"] * 56
    assert engine.peak == peak


def test_the_generation_pool_is_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="generation_threads must be at least 1"):
        create_app(Crowd(1), generation_threads=0)  # type: ignore[arg-type]
