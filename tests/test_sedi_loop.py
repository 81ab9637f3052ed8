"""The loop on a scripted teacher behind the real server: both methods on the same requests, the relaxed
filter with its embedding rule, diverse batches and per-round metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diversity import VectorIndex
from tests.helpers import ledger, rows, scripted_args, sedi, status
from tests.servers import Served

pytestmark = pytest.mark.slow  # every test here starts `python -m sedi`


def test_sedi_keeps_more_than_self_instruct_on_the_same_requests(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    base, sedi_dir = tmp_path / "self-instruct", tmp_path / "sedi"
    assert sedi(*scripted_args(base, scripted, tiny_model_dir, "--set", "method=self-instruct")).returncode == 0
    # Self-Instruct's 6 human + 2 machine slots over the pool; windows of one step, so round 1 promotes
    split = ("--set", "feedback.in_context=split", "--set", "feedback.interval=1", "--set", "feedback.promote=top_k")
    result = sedi(*scripted_args(sedi_dir, scripted, tiny_model_dir, "--set", "filter.embedding_threshold=0.9", *split))
    assert result.returncode == 0, result.stderr
    a, b = status(base), status(sedi_dir)
    assert a["calls"] == b["calls"] == 8 == len(ledger(base))
    assert b["kept"] > a["kept"] > 0
    assert a["rejected_by_rule"].get("rouge", 0) > b["rejected_by_rule"].get("rouge", 0)
    assert b["embedding_rejects"] == b["rejected_by_rule"].get("embedding", 0)
    assert "embedding" not in a["rejected_by_rule"]  # the baseline stays ROUGE-L only
    assert a["diversity"] and b["diversity"]["topics_covered"] >= 1
    # The pool's index is saved with the run: the 175 seeds and every instruction that joined the pool.
    saved = VectorIndex.load(sedi_dir / "index" / "pool")
    assert len(saved) == 175 + rows(sedi_dir, "SELECT COUNT(*) FROM candidates WHERE pooled = 1")[0][0]
    assert not (base / "index").exists()  # the ROUGE-L-only baseline has no index
    # every copied in-context instruction is rejected by ROUGE-L (score 1.0 against a seed)
    copies = rows(sedi_dir, "SELECT detail FROM candidates WHERE output = 'A copied answer.'")
    assert copies and all(json.loads(d)["rouge"] == 1.0 for (d,) in copies)
    # round 2's prompts show machine tasks promoted in round 1, in their machine slots
    contexts = [json.loads(c) for (c,) in rows(sedi_dir, "SELECT context FROM requests WHERE round = 1")]
    assert all(any(t.startswith("machine-") for t in ctx) for ctx in contexts)
    # promote=top_k ranks by per-example loss, so each trained task's loss was measured after its round
    measured = rows(sedi_dir, "SELECT e.task_id, c.verdict FROM example_losses e JOIN candidates c ON c.id = e.task_id")
    assert measured and {verdict for _, verdict in measured} == {"kept"}


def test_batches_take_every_kept_task_once_and_one_per_cluster(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = sedi(*scripted_args(run_dir, scripted, tiny_model_dir, "--set", "student.train.per_device_batch_size=4"))
    assert result.returncode == 0, result.stderr
    for round_index in (0, 1):
        kept = {i for (i,) in rows(run_dir, f"SELECT id FROM candidates WHERE verdict='kept' AND round={round_index}")}
        sql = f"SELECT task_ids, clusters FROM batches WHERE round={round_index} ORDER BY batch_index"
        batches = rows(run_dir, sql)
        ids = [i for body, _ in batches for i in json.loads(body)]
        assert sorted(ids) == sorted(kept) and len(ids) == len(set(ids))
        full = [(json.loads(body), clusters) for body, clusters in batches[:-1]]
        assert all(clusters == len(batch) for batch, clusters in full[: len(full) // 2])  # clusters allow it early on
    metrics = dict(rows(run_dir, "SELECT name, value FROM round_metrics WHERE round = 1"))
    assert metrics["kept"] == status(run_dir)["kept"] and 0 < metrics["diversity_mean_cosine_distance"] <= 2
    assert metrics["batch_clusters_mean"] >= 1 and (run_dir / "embeddings.sqlite").is_file()
    # where the round's time went, part by part; per-example losses are not measured when nothing reads them
    assert {"seconds_generate", "seconds_filter", "seconds_batches", "seconds_train", "seconds_measure"} <= set(metrics)
    assert all(metrics[name] > 0 for name in metrics if name.startswith("seconds_"))
    assert rows(run_dir, "SELECT COUNT(*) FROM example_losses") == [(0,)]


def _answered(run_dir: Path) -> dict[str, int]:
    sql = (
        "SELECT q.kind, COUNT(DISTINCT c.request_key) FROM calls c JOIN requests q ON q.request_key = c.request_key "
        "WHERE c.status = 'ok' GROUP BY q.kind"
    )
    return dict(rows(run_dir, sql))


def test_a_budget_that_ends_among_the_instance_calls_leaves_finished_tasks(
    tmp_path: Path, scripted: Served, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "published"
    published = ["--set", "method=self-instruct", "--set", "generation.prompt_style=self-instruct"]
    small = [*published, "--set", "generation.calls_per_round=2", "--set", "run.max_rounds=1"]
    small += ["--set", "teacher.concurrency=2", "--set", "budget.max_calls=9"]
    assert sedi(*scripted_args(run_dir, scripted, tiny_model_dir, *small)).returncode == 3  # a budget stop
    first, answered = status(run_dir), _answered(run_dir)
    assert first["state"] == "budget_exhausted" and first["calls"] == 9
    # 2 generation calls, then chunks of 2 tasks (2 classify + 2 instance calls): the 7 calls left finish 2 tasks
    # (3 calls are left over for the next chunk, whose instance calls do not both fit).
    assert answered == {"tasks": 2, "classify": 4, "instances": 3}
    assert first["kept"] >= 2
    pending = rows(run_dir, "SELECT COUNT(*) FROM candidates WHERE verdict = 'pending'")[0][0]
    assert pending > 0

    more = [*small[:-1], "budget.max_calls=100"]
    assert sedi(*scripted_args(run_dir, scripted, tiny_model_dir, *more)).returncode == 0
    assert status(run_dir)["state"] == "finished"
    assert rows(run_dir, "SELECT COUNT(*) FROM candidates WHERE verdict = 'pending'")[0][0] == 0
    keys = [row["request_key"] for row in ledger(run_dir) if row["status"] == "ok"]
    assert len(keys) == len(set(keys))  # nothing answered was asked again
