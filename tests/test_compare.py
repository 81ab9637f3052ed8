"""`sedi compare` end to end (scripted teacher behind the real server, tiny student): the table's numbers agree
exactly with the two runs' ledgers and data files, and the report renders from the comparison."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.scripted_teacher import ScriptedEngine
from tests.servers import Served
from tests.test_run_e2e import sedi


def test_compare_table_matches_both_runs(
    tmp_path: Path, serve_engine: Callable[[Any], Served], tiny_model_dir: Path
) -> None:
    server = serve_engine(ScriptedEngine())
    out = tmp_path / "cmp"
    sets = {
        "teacher.provider": "openai",
        "teacher.base_url": server.base_url,
        "teacher.model": "scripted-teacher",
        "generation.calls_per_round": "3",
        "generation.target_kept": "20",
        "student.model": str(tiny_model_dir),
        "student.heldout_size": "4",
        "feedback.interval": "2",
    }
    args = ["compare", "--run-dir", str(out)] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = sedi(*args)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "comparison.json").read_text())
    for method in ("self-instruct", "sedi"):
        row = table["methods"][method]
        run_dir = out / method
        db = sqlite3.connect(run_dir / "sedi.db")
        calls = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        tokens = db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM calls").fetchone()
        method_in_config = db.execute("SELECT body FROM configs ORDER BY id DESC LIMIT 1").fetchone()[0]
        rules = dict(
            db.execute("SELECT rule, COUNT(*) FROM candidates WHERE verdict = 'rejected' GROUP BY rule").fetchall()
        )
        db.close()
        kept = (run_dir / "data" / "kept.jsonl").read_text().count("\n")
        candidates = (run_dir / "data" / "candidates.jsonl").read_text().count("\n")
        assert f"method: {method}" in method_in_config
        assert row["calls"] == calls and (row["prompt_tokens"], row["completion_tokens"]) == tuple(tokens)
        assert row["kept"] == kept >= 20 and row["candidates"] == candidates  # both stop at the same target
        assert row["calls_per_kept"] == round(calls / kept, 4)
        assert row["rejected_by_rule"] == rules
        assert row["heldout_loss"] is not None and row["diversity_mean_cosine_distance"] > 0
    a, b = table["methods"]["self-instruct"], table["methods"]["sedi"]
    assert table["calls_per_kept_ratio"] == b["calls_per_kept"] / a["calls_per_kept"]
    markdown = (out / "comparison.md").read_text()
    assert f"| API calls | {a['calls']:,.4g} | {b['calls']:,.4g} |" in markdown

    report = sedi("report", str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "report.html").read_text()
    assert "self-instruct" in html and "sedi" in html and html.count("data:image/png;base64,") >= 7
    assert sorted(p.name for p in (out / "report").glob("*.png"))
