"""`sedi compare` end to end (scripted teacher behind the real server, tiny student): the table's numbers agree
exactly with the three runs' ledgers and data files, and the report renders from the comparison."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sedi.compare import _aggregate, _markdown, pair_ratios
from tests.helpers import sedi
from tests.servers import Served


def test_compare_table_matches_both_runs(tmp_path: Path, scripted: Served, tiny_model_dir: Path) -> None:
    server = scripted
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
        "teacher.prices.prompt": "0.15",  # USD per million tokens: the table gives USD per kept task
        "teacher.prices.completion": "0.6",
    }
    args = ["compare", "--run-dir", str(out), "--published-baseline"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = sedi(*args)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "comparison.json").read_text())
    arms = {
        "self-instruct": "self-instruct",
        "sedi-paper": "sedi",
        "sedi": "sedi",
        "self-instruct-published": "self-instruct",
    }
    for arm, method in arms.items():
        row = table["arms"][arm]
        run_dir = out / arm
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
        assert (f"steer: {str(arm == 'sedi').lower()}" in method_in_config) or method == "self-instruct"
        style = "self-instruct" if arm == "self-instruct-published" else "alpaca"
        assert f"prompt_style: {style}" in method_in_config
        assert row["calls"] == calls and (row["prompt_tokens"], row["completion_tokens"]) == tuple(tokens)
        assert row["kept"] == kept >= 20 and row["candidates"] == candidates  # both stop at the same target
        assert row["calls_per_kept"] == round(calls / kept, 4)
        assert row["tokens_per_kept"] == round((tokens[0] + tokens[1]) / kept, 2)
        assert row["usd_per_kept"] == pytest.approx((tokens[0] * 0.15 + tokens[1] * 0.6) / 1e6 / kept, rel=1e-3)
        assert row["cost_known"] is True
        assert row["rejected_by_rule"] == rules
        assert row["heldout_loss"] is not None and row["diversity_mean_cosine_distance"] > 0
        assert 0 <= row["heldout_rouge_l"] <= 1
    assert table["arm_order"] == list(arms)  # the columns' order, baseline first
    a, p, b, c = (table["arms"][arm] for arm in arms)
    cpk = {arm: table["arms"][arm]["calls"] / table["arms"][arm]["kept"] for arm in arms}
    assert table["calls_per_kept_ratio"] == cpk["sedi"] / cpk["self-instruct"]
    assert table["calls_per_kept_ratio_paper"] == cpk["sedi-paper"] / cpk["self-instruct"]
    assert table["calls_per_kept_ratio_published"] == cpk["sedi"] / cpk["self-instruct-published"]
    # Tokens and USD per kept task, the SeDi arms over the baseline (one seed: the arms' own totals).
    tpk = {arm: (row["prompt_tokens"] + row["completion_tokens"]) / row["kept"] for arm, row in table["arms"].items()}
    usd = {arm: row["cost_usd"] / row["kept"] for arm, row in table["arms"].items()}
    assert table["tokens_per_kept_ratio"] == pytest.approx(tpk["sedi"] / tpk["self-instruct"])
    assert table["tokens_per_kept_ratio_paper"] == pytest.approx(tpk["sedi-paper"] / tpk["self-instruct"])
    assert table["usd_per_kept_ratio"] == pytest.approx(usd["sedi"] / usd["self-instruct"])
    assert table["usd_per_kept_ratio_paper"] == pytest.approx(usd["sedi-paper"] / usd["self-instruct"])
    low, high = table["calls_per_kept_ratio_ci95"]  # one seed: the Poisson interval around the ratio
    assert low < table["calls_per_kept_ratio"] < high
    # every run's per-round (calls, kept) add up to its totals, for the bootstrap over rounds
    for arm in arms:
        (run,) = table["runs"][arm]
        assert [sum(x) for x in zip(*run["rounds"], strict=True)] == [run["calls"], run["kept"]]
    # The published pipeline pays a classification and an instance call per instruction that passes.
    published_db = sqlite3.connect(out / "self-instruct-published" / "sedi.db")
    kinds = dict(published_db.execute("SELECT kind, COUNT(*) FROM requests GROUP BY kind").fetchall())
    published_db.close()
    assert kinds.get("tasks", 0) > 0 and kinds.get("instances", 0) > 0, kinds
    markdown = (out / "comparison.md").read_text()
    assert f"| API calls | {a['calls']:,.4g} | {p['calls']:,.4g} | {b['calls']:,.4g} | {c['calls']:,.4g} |" in markdown
    assert "Calls per kept task, sedi over self-instruct:" in markdown and "95% interval" in markdown
    assert f"Tokens per kept task: {table['tokens_per_kept_ratio']:.3f}x; cost per kept task: " in markdown
    assert f"| cost per kept task (USD) | {a['usd_per_kept']:,.4g} |" in markdown

    report = sedi("report", str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "report.html").read_text()
    assert "self-instruct-published" in html and "sedi" in html and html.count("data:image/png;base64,") >= 7
    assert sorted(p.name for p in (out / "report").glob("*.png"))


def test_cost_per_kept_task_is_unknown_without_prices_never_zero() -> None:
    def row(calls: int, kept: int, tokens: int) -> dict[str, Any]:
        return {"calls": calls, "kept": kept, "prompt_tokens": tokens, "completion_tokens": 0, "cost_usd": None,
                "cost_known": False, "usd_per_kept": None, "tokens_per_kept": tokens / kept, "rejected_by_rule": {},
                "rounds": [(calls, kept)]}  # fmt: skip

    runs = {"self-instruct": [row(10, 5, 1000)], "sedi": [row(10, 8, 1200)]}
    ratios = {"sedi over self-instruct": pair_ratios(runs, "sedi", "self-instruct")}
    pair = ratios["sedi over self-instruct"]
    assert pair["usd_per_kept"] is None and pair["cost_known"] is False
    assert pair["tokens_per_kept"] == pytest.approx((1200 / 8) / (1000 / 5))
    arms = {arm: _aggregate(rows) for arm, rows in runs.items()}
    assert arms["sedi"]["cost_known"] is False and "usd_per_kept" not in arms["sedi"]
    markdown = _markdown({"arms": arms, "repeat": 1, "seeds": [0], "runs": runs, "ratios": ratios})
    assert "| cost per kept task (USD) | unknown | unknown |" in markdown
    assert "| cost (USD) | unknown | unknown |" in markdown and "| tokens per kept task | 200 | 150 |" in markdown
    assert "Tokens per kept task: 0.750x; cost per kept task: unknown (no teacher.prices)." in markdown
