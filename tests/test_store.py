"""The run store: WAL, one owner at a time, in-flight rows survive a crash as 'interrupted'."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sedi.config.teacher import BudgetConfig
from sedi.exceptions import BudgetExceeded, RunDirError
from sedi.report.summary import read_summary
from sedi.store.db import AttemptOutcome, CachedResponse, RunStore, Usage
from sedi.teacher.budget import Budget, prompt_token_bound


def test_wal_mode_and_exclusive_ownership(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(RunDirError, match="another sedi process is using this run directory"):
            RunStore(tmp_path)
        assert read_summary(tmp_path)["state"] == "created"  # readable while owned
    RunStore(tmp_path).close()  # free again once closed


def test_sent_rows_of_a_dead_process_become_interrupted_and_charged(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    call_id = store.begin_attempt("k1", 0, "m", "completions", Usage(1, 500, 0.25))
    done = store.begin_attempt("k2", 0, "m", "completions", Usage(1, 500, 0.25))
    store.finish_attempt(
        done,
        AttemptOutcome("ok", 200, "stop", 10, 5, 0.001, Usage(1, 15, 0.001)),
        response=("{}", CachedResponse("k2", "text", "stop", 10, 5)),
    )
    store.close()  # as if killed: k1 never finished

    reopened = RunStore(tmp_path)
    assert reopened.recovered_interrupted == 1
    rows = {r["id"]: r for r in reopened.ledger()}
    assert rows[call_id]["status"] == "interrupted" and rows[call_id]["charged_tokens"] == 500
    assert reopened.spent() == Usage(2, 515, pytest.approx(0.251))  # type: ignore[arg-type]
    assert reopened.cached("k2") is not None and reopened.cached("k1") is None
    assert [r["request_key"] for r in rows.values()].count("k1") == 1
    reopened.close()


def test_prompt_token_bound_is_an_upper_bound_for_a_real_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["Task 1: Say hello.", "Übersetze: naïve café ☕ — 東京", "x" * 300, ""]
    for text in texts:
        assert len(tokenizer(text)["input_ids"]) <= prompt_token_bound([text])


def test_budget_waits_for_in_flight_then_refuses_when_nothing_can_free_room() -> None:
    async def scenario() -> list[str]:
        budget = Budget(BudgetConfig(max_tokens=100), Usage())
        events: list[str] = []
        first = await budget.reserve(Usage(1, 60))

        async def second() -> None:
            await budget.reserve(Usage(1, 60))  # does not fit while the first holds 60
            events.append("second reserved")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        events.append("first settles")
        budget.settle(first, Usage(1, 20))  # real usage far below the worst case
        await task
        with pytest.raises(BudgetExceeded, match=r"budget\.max_tokens is 100"):
            budget.settle(Usage(1, 60), Usage(1, 30))
            await budget.reserve(Usage(1, 60))  # 50 spent, nothing in flight: 110 > 100
        return events

    assert asyncio.run(scenario()) == ["first settles", "second reserved"]
