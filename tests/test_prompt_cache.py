"""Prompt caching: ``usage.prompt_tokens_details.cached_tokens`` reaches the ledger, is priced at
``teacher.prices.cached_prompt`` and shows in ``sedi status`` and the report; the reservation never assumes a hit.

A small loopback server answers like an OpenAI-compatible API: a prompt containing ``cached`` reports half of its
prompt tokens as cached, ``huge`` reports more cached tokens than prompt tokens, anything else leaves the field out.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from sedi.config.model import SediConfig
from sedi.config.teacher import Prices
from sedi.report.page import write_report
from sedi.report.summary import read_summary
from sedi.store.db import RunStore
from sedi.teacher.budget import Budget
from sedi.teacher.client import Endpoint, TeacherClient, TeacherRequest
from tests.servers import Served, read_body, serve_app

PROMPT_RATE, COMPLETION_RATE, CACHED_RATE = 2.0, 8.0, 0.5  # USD per million tokens
COMPLETION_TOKENS = 8
FILLER = "x" * 400  # prompts long enough that a reported count stays well under the reserved bound


def _usage(prompt: str) -> dict[str, Any]:
    prompt_tokens = len(prompt.encode()) // 4 + 1
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + COMPLETION_TOKENS,
    }
    if "cached" in prompt:
        usage["prompt_tokens_details"] = {"cached_tokens": prompt_tokens // 2, "audio_tokens": 0}
    elif "huge" in prompt:  # a provider misreporting: more cached than prompt tokens is clamped to the prompt
        usage["prompt_tokens_details"] = {"cached_tokens": prompt_tokens * 10}
    elif "null" in prompt:
        usage["prompt_tokens_details"] = None
    return usage


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    request = json.loads(await read_body(receive))
    prompt = str(request.get("prompt", ""))
    body = {
        "id": "cmpl-cache",
        "object": "text_completion",
        "created": 0,
        "model": str(request.get("model", "m")),
        "choices": [{"index": 0, "text": "Task 2: Say hello.", "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(prompt),
    }
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": raw})


@pytest.fixture
def served() -> Iterator[Served]:
    with serve_app(_app) as served:
        yield served


def _run(run_dir: Path, base_url: str, prompts: list[str], prices: dict[str, float]) -> dict[str, Any]:
    """One start over HTTP: the ledger row of each prompt, and the budget's spent and reserved afterwards."""
    config = SediConfig.model_validate(
        {
            "teacher": {"provider": "openai", "base_url": base_url, "max_retries": 0, "prices": prices},
            "budget": {"max_calls": None},
        }
    )
    with RunStore(run_dir) as store:
        budget = Budget(config.budget, store.spent(config.teacher.prices))
        client = TeacherClient(config.teacher, store, budget, lambda: Endpoint(base_url, "sk-test"))

        requests = [TeacherRequest(prompt=p, max_tokens=16) for p in prompts]

        async def go() -> None:
            try:
                await client.complete_all(requests)
            finally:
                await client.aclose()

        asyncio.run(go())
        rows = {r["request_key"]: r for r in store.ledger()}
        assert len(rows) == len(prompts), "one attempt per request"
        keys = [r.key(config.teacher.model, config.teacher.mode) for r in requests]
        by_prompt = {p: rows[k] for p, k in zip(prompts, keys, strict=True)}
        return {"rows": by_prompt, "spent": budget.spent, "reserved": budget.reserved}


def _cost(row: dict[str, Any], cached_rate: float) -> float:
    fresh = row["prompt_tokens"] - row["cached_tokens"]
    return (fresh * PROMPT_RATE + row["cached_tokens"] * cached_rate + row["completion_tokens"] * COMPLETION_RATE) / 1e6


def test_cached_tokens_are_recorded_priced_at_their_rate_and_reported(tmp_path: Path, served: Served) -> None:
    prices = {"prompt": PROMPT_RATE, "completion": COMPLETION_RATE, "cached_prompt": CACHED_RATE}
    prompts = [f"cached {i} {FILLER}" for i in range(3)] + [f"plain {FILLER}", f"null {FILLER}", f"huge {FILLER}"]
    run = _run(tmp_path / "run", served.base_url, prompts, prices)
    by_prompt = run["rows"]
    rows = {r["request_key"]: r for r in by_prompt.values()}
    assert all(r["status"] == "ok" for r in rows.values())

    for prompt, row in by_prompt.items():
        expected = _usage(prompt)
        assert row["prompt_tokens"] == expected["prompt_tokens"]
        cached = {"cached": expected["prompt_tokens"] // 2, "huge": expected["prompt_tokens"]}.get(prompt.split()[0], 0)
        assert row["cached_tokens"] == cached, prompt  # absent or null details: 0; more than the prompt: clamped
        assert row["cost_usd"] == pytest.approx(_cost(row, CACHED_RATE))
        assert row["charged_cost_usd"] == pytest.approx(row["cost_usd"])
        # The reservation priced every prompt token at the full rate: a cache hit is never assumed before the answer.
        bound = row["reserved_tokens"] - 16
        assert row["reserved_cost_usd"] == pytest.approx((bound * PROMPT_RATE + 16 * COMPLETION_RATE) / 1e6)
        assert row["cost_usd"] < row["reserved_cost_usd"]
    assert by_prompt[prompts[0]]["cost_usd"] < _cost({**by_prompt[prompts[0]], "cached_tokens": 0}, CACHED_RATE)

    total_cost = sum(r["cost_usd"] for r in rows.values())
    assert run["spent"].cost_usd == pytest.approx(total_cost)
    assert run["reserved"].calls == 0 and run["reserved"].cost_usd == pytest.approx(0.0, abs=1e-12)

    summary = read_summary(tmp_path / "run")
    prompt_tokens = sum(r["prompt_tokens"] for r in rows.values())
    cached_tokens = sum(r["cached_tokens"] for r in rows.values())
    assert summary["prompt_tokens"] == prompt_tokens and summary["cached_prompt_tokens"] == cached_tokens > 0
    assert summary["cached_share"] == round(cached_tokens / prompt_tokens, 4)
    assert summary["cost_usd"] == pytest.approx(total_cost, abs=1e-6)
    assert summary["budget_charged_cost_usd"] == pytest.approx(total_cost, abs=1e-6)

    page = write_report([tmp_path / "run"], tmp_path / "report").read_text()
    row = re.search(r'<tr data-metric="cached_share">(.*?)</tr>', page)
    assert row is not None and f"{100 * summary['cached_share']:.1f}%" in row.group(1)

    # A rerun reads the same spend back from the ledger (the repricing in SQL matches the per-call cost).
    with RunStore(tmp_path / "run") as store:
        assert store.spent(Prices(**prices)).cost_usd == pytest.approx(total_cost)


def test_without_a_cached_rate_cached_tokens_cost_the_prompt_rate(tmp_path: Path, served: Served) -> None:
    prices = {"prompt": PROMPT_RATE, "completion": COMPLETION_RATE}
    run = _run(tmp_path / "run", served.base_url, [f"cached {FILLER}", f"plain {FILLER}"], prices)
    cached_row, plain_row = run["rows"][f"cached {FILLER}"], run["rows"][f"plain {FILLER}"]
    assert cached_row["cached_tokens"] > 0 and plain_row["cached_tokens"] == 0
    for row in (cached_row, plain_row):
        assert row["cost_usd"] == pytest.approx(_cost(row, PROMPT_RATE))
    summary = read_summary(tmp_path / "run")
    assert summary["cached_prompt_tokens"] == cached_row["cached_tokens"]
    assert summary["cost_usd"] == pytest.approx(cached_row["cost_usd"] + plain_row["cost_usd"], abs=1e-6)


def test_a_run_dir_from_before_the_column_is_read_and_then_migrated(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    RunStore(run_dir).close()
    db = sqlite3.connect(run_dir / RunStore.DB_NAME)
    db.execute("ALTER TABLE calls DROP COLUMN cached_tokens")  # as a file written before the column existed
    db.execute(
        "INSERT INTO calls (request_key, attempt, model, endpoint, status, prompt_tokens, completion_tokens, "
        "cost_usd, charged_tokens, charged_cost_usd, started_at) VALUES ('k', 0, 'm', 'completions', 'ok', 10, 2, "
        "0.1, 12, 0.1, 0)"
    )
    db.commit()
    db.close()
    summary = read_summary(run_dir)  # read-only: nothing is added, the missing column reads as 0
    assert summary["prompt_tokens"] == 10 and summary["cached_prompt_tokens"] == 0 and summary["cached_share"] == 0
    with RunStore(run_dir) as store:  # opening it for a run adds the column; the schema version stays
        assert store.ledger()[0]["cached_tokens"] == 0 and store.get_meta("schema_version") == "2"
        assert store.spent().cost_usd == pytest.approx(0.1)


def test_a_cached_rate_above_the_prompt_rate_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="cached_prompt"):
        SediConfig.model_validate({"teacher": {"prices": {"prompt": 1.0, "completion": 2.0, "cached_prompt": 1.5}}})
    ok = SediConfig.model_validate({"teacher": {"prices": {"prompt": 1.0, "completion": 2.0, "cached_prompt": 1.0}}})
    assert ok.teacher.prices is not None and ok.teacher.prices.cached_prompt == 1.0
