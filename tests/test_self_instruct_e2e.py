"""`sedi run` with `method: self-instruct` end to end on the bundled Gemma-3-270m teacher behind a real local
OpenAI-compatible server: instruction-only prompts, classification, instances, filters and datasets."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import ledger, sedi, status
from tests.servers import Served


def test_self_instruct_run_keeps_tasks_with_instances(
    tmp_path: Path, gemma_engine: Any, serve_engine: Callable[[Any], Served], tiny_model_dir: Path
) -> None:
    server = serve_engine(gemma_engine)
    run_dir = tmp_path / "run"
    sets = {
        "method": "self-instruct",
        "generation.prompt_style": "self-instruct",
        "teacher.provider": "openai",
        "teacher.base_url": server.base_url,
        "teacher.backoff_base_s": "0",
        "generation.calls_per_round": "1",
        "generation.sampling.max_tokens": "160",
        "instances.max_tokens": "100",
        "run.max_rounds": "1",
        "student.model": str(tiny_model_dir),  # the student is not under test here: train the tiny one
        "student.heldout_size": "4",
    }
    args = ["run", "--run-dir", str(run_dir)] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    first = sedi(*args)
    assert first.returncode == 0, first.stderr

    # the ledger and the server agree on every request
    counts = server.counter.counts
    rows = ledger(run_dir)
    assert len(rows) == server.counter.total == counts["/v1/completions"]
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["calls"] == len(rows)

    db = sqlite3.connect(run_dir / "sedi.db")
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM requests GROUP BY kind").fetchall())
    pooled = db.execute("SELECT COUNT(*) FROM candidates WHERE pooled = 1").fetchone()[0]
    verdicts = [row[0] for row in db.execute("SELECT verdict FROM candidates")]
    db.close()
    assert kinds == {"tasks": 1, "classify": pooled, "instances": pooled}  # one of each per passing instruction
    assert len(rows) == 1 + 2 * pooled
    assert verdicts and set(verdicts) <= {"kept", "rejected"}  # every candidate has a final verdict

    kept = [json.loads(line) for line in (run_dir / "data" / "kept.jsonl").read_text().splitlines()]
    assert kept and len(kept) == summary["kept"]
    for task in kept:
        assert task["instances"] and all(i["output"].strip() for i in task["instances"])
        assert task["is_classification"] in (True, False, None)
        prov = task["provenance"]
        assert prov["call_id"] == rows[0]["id"] and len(prov["in_context"]) == 6 and prov["instance_request_key"]

    from datasets import load_dataset

    train = load_dataset("json", data_files=str(run_dir / "data" / "train.jsonl"), split="train")
    assert len(train) == sum(len(t["instances"]) for t in kept)
    assert [m["role"] for m in train[0]["messages"]] == ["user", "assistant"]
    candidates = (run_dir / "data" / "candidates.jsonl").read_text().splitlines()
    assert len(candidates) == summary["candidates"]

    # a rerun is answered from the cache: nothing reaches the server
    again = sedi(*args)
    assert again.returncode == 0, again.stderr
    assert server.counter.total == len(rows)
    assert (run_dir / "data" / "kept.jsonl").read_text().count("\n") == len(kept)
