"""The run's datasets, written from the database after every round (atomically, so a reader never sees
half a file):

- ``data/kept.jsonl``: one kept task per line: ``id``, ``instruction``, ``input``, ``output`` (its
  first instance), ``instances``, ``is_classification`` and ``provenance`` (round, the call that wrote
  it, its position in the answer, the in-context task ids of that prompt, the instance request);
- ``data/train.jsonl``: chat-format rows (``messages``) for fine-tuning, one per instance, loadable
  with ``datasets.load_dataset("json", data_files=...)``;
- ``data/candidates.jsonl``: every candidate with its verdict, the rule that decided it and details.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from sedi.base.files import fsync_write
from sedi.base.vocabulary import INSTANCES, KEPT
from sedi.config.seeds import Task
from sedi.store.candidates import machine_task_id
from sedi.store.db import RunStore

_KEPT_SQL = """
SELECT c.id, c.round, c.position, c.instruction, c.input, c.output, c.is_classification, c.request_key,
       q.context, q.sample_index,
       (SELECT r.call_id FROM responses r WHERE r.request_key = c.request_key) AS call_id,
       (SELECT i.request_key FROM requests i WHERE i.candidate_id = c.id AND i.kind = :instances) AS instance_key
FROM candidates c JOIN requests q ON q.request_key = c.request_key
WHERE c.verdict = :kept {where}
ORDER BY c.round, q.sample_index, c.position
"""


def user_turn(instruction: str, input_text: str) -> str:
    """How a task is shown to the student: the instruction, then its input when there is one."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


class HasDb(Protocol):
    """What ``kept_records`` reads: a RunStore, or a read-only view of a run (``sedi export``)."""

    db: sqlite3.Connection  # with row_factory sqlite3.Row


def kept_records(store: HasDb, before_round: int | None = None) -> list[dict[str, Any]]:
    where = "" if before_round is None else "AND c.round < :before"
    stored: dict[int, list[dict[str, str]]] = {}
    rows = store.db.execute("SELECT candidate_id, input, output FROM instances ORDER BY candidate_id, idx")
    for cid, inp, out in rows:
        stored.setdefault(cid, []).append({"input": inp, "output": out})
    records = []
    params = {"instances": INSTANCES, "kept": KEPT, "before": before_round}
    for row in store.db.execute(_KEPT_SQL.format(where=where), params).fetchall():
        instances = stored.get(row["id"], []) or [{"input": row["input"], "output": row["output"]}]
        clf = row["is_classification"]
        records.append(
            {
                "id": machine_task_id(row["id"]),
                "instruction": row["instruction"],
                "input": instances[0]["input"],
                "output": instances[0]["output"],
                "instances": instances,
                "is_classification": None if clf is None else bool(clf),
                "provenance": {
                    "round": row["round"],
                    "request_key": row["request_key"],
                    "call_id": row["call_id"],
                    "position": row["position"],
                    "sample_index": row["sample_index"],
                    "in_context": json.loads(row["context"]),
                    "instance_request_key": row["instance_key"],
                },
            }
        )
    return records


def kept_tasks(store: RunStore, before_round: int | None = None) -> list[Task]:
    """Kept tasks as in-context examples for later prompts."""
    return [
        Task(r["id"], r["instruction"], r["input"], r["output"], origin="machine")
        for r in kept_records(store, before_round)
    ]


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_datasets(store: RunStore, run_dir: Path) -> dict[str, Path]:
    data = run_dir / "data"
    data.mkdir(exist_ok=True)
    kept = kept_records(store)
    train = [
        {
            "id": f"{record['id']}-{i}",
            "task_id": record["id"],
            "messages": [
                {"role": "user", "content": user_turn(record["instruction"], inst["input"])},
                {"role": "assistant", "content": inst["output"]},
            ],
        }
        for record in kept
        for i, inst in enumerate(record["instances"])
    ]
    candidates = [
        {**dict(row), "detail": json.loads(row["detail"]) if row["detail"] else None}
        for row in store.db.execute(
            "SELECT id, round, request_key, position, instruction, input, output, verdict, rule, detail "
            "FROM candidates ORDER BY id"
        )
    ]
    paths = {"kept": data / "kept.jsonl", "train": data / "train.jsonl", "candidates": data / "candidates.jsonl"}
    fsync_write(paths["kept"], _jsonl(kept))
    fsync_write(paths["train"], _jsonl(train))
    fsync_write(paths["candidates"], _jsonl(candidates))
    return paths
