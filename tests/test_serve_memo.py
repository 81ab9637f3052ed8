"""Seeded requests answered once (sedi/serve/_memo.py): over HTTP on the tiny model, and the memo's own rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from sedi.serve import Engine
from sedi.serve._memo import SeededAnswers
from tests.servers import Served

PROMPT = "1. Instruction: List three tips.\n2. Instruction:"


@pytest.fixture
def served(tiny_model_dir: Path, serve_engine: Callable[[Any], Served]) -> tuple[Engine, openai.OpenAI]:
    engine = Engine.load(str(tiny_model_dir), device="cpu")  # its own, so that its counts are this test's
    api = openai.OpenAI(base_url=serve_engine(engine).base_url, api_key="x", max_retries=0, timeout=120)
    return engine, api


def test_a_repeated_seeded_request_gets_the_first_answer_in_any_batch(served: tuple[Engine, openai.OpenAI]) -> None:
    engine, api = served
    stats = engine.scheduler.stats

    def ask(prompt: str = PROMPT, **extra: Any) -> Any:
        return api.completions.create(model=engine.model_id, prompt=prompt, max_tokens=12, temperature=1.0, **extra)

    first = ask(seed=7)
    assert stats.finished == 1
    # The repeat arrives among other requests (another batch than the first one's): answered, not decoded.
    with ThreadPoolExecutor(4) as pool:
        others = [pool.submit(ask, f"{PROMPT} {i}", seed=7) for i in range(3)]
        repeat = pool.submit(ask, seed=7).result()
        [f.result() for f in others]
    assert repeat.choices[0].text == first.choices[0].text and repeat.usage == first.usage
    assert stats.finished == 1 + 3
    # Copies in flight at once are decoded once; another seed or setting is another request.
    with ThreadPoolExecutor(3) as pool:
        twins = [pool.submit(ask, seed=8) for _ in range(3)]
        texts = {f.result().choices[0].text for f in twins}
    assert len(texts) == 1 and stats.finished == 1 + 3 + 1
    ask(seed=7, top_p=0.5)
    assert stats.finished == 1 + 3 + 1 + 1
    # Without a seed every request is sampled afresh.
    ask()
    ask()
    assert stats.finished == 1 + 3 + 1 + 1 + 2


def test_a_copy_waiting_on_a_failed_first_decodes_itself_and_old_answers_leave() -> None:
    async def scenario() -> tuple[list[str], str, int]:
        answers, calls, gate = SeededAnswers(size=2), [], asyncio.Event()

        async def fails() -> str:
            calls.append("first")
            await gate.wait()
            raise RuntimeError("the client went away")

        async def works(name: str = "second") -> str:
            calls.append(name)
            return f"text of {name}"

        first = asyncio.create_task(answers.answer("k", fails))
        await asyncio.sleep(0)
        copy = asyncio.create_task(answers.answer("k", works))
        await asyncio.sleep(0)
        assert calls == ["first"]  # the copy waits for the first
        gate.set()
        with pytest.raises(RuntimeError):
            await first
        got = await copy
        assert await answers.answer("k", lambda: works("never")) == got  # now remembered
        await answers.answer("k2", works)
        await answers.answer("k3", works)  # "k" is the least recently used of three: it leaves
        await answers.answer("k", lambda: works("again"))
        await answers.answer(None, lambda: works("unseeded"))
        await answers.answer(None, lambda: works("unseeded"))
        return calls, got, answers.hits

    calls, got, hits = asyncio.run(scenario())
    assert got == "text of second" and hits == 1
    assert calls == ["first", "second", "second", "second", "again", "unseeded", "unseeded"]


def test_a_negative_memo_size_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        SeededAnswers(-1)
