"""`sedi compare` end to end (scripted teacher behind the real server, tiny student): the table's numbers agree
exactly with every arm's ledger and data files, and the report renders from the comparison."""

from __future__ import annotations

import html as html_lib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from benchmarks.sample_run import write_sample_run
from sedi.experiment.comparison import _aggregate, _markdown, pair_ratios, run_row, tabulate
from sedi.report import stats
from sedi.report.arm_stats import clearly_better, ratio_words
from sedi.report.page import write_report
from sedi.report.summary import read_summary
from tests.helpers import load_script, sedi
from tests.servers import Served


@pytest.mark.slow
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
    args = ["compare", "--run-dir", str(out), "--arms", "self-instruct,default,relaxed-filter-only"]
    args += ["--published-baseline"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = sedi(*args, timeout=900)  # four arms, each a run with a student on a shared CPU
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "comparison.json").read_text())
    arms = {
        "self-instruct": "self-instruct",
        "default": "sedi",
        "relaxed-filter-only": "self-instruct",
        "self-instruct-published": "self-instruct",
    }
    for arm, method in arms.items():
        row = table["arms"][arm]
        run_dir = out / arm
        db = sqlite3.connect(run_dir / "sedi.db")
        calls = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        tokens = db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM calls").fetchone()
        digest, method_in_config = db.execute("SELECT digest, body FROM configs ORDER BY id DESC LIMIT 1").fetchone()
        rules = dict(
            db.execute("SELECT rule, COUNT(*) FROM candidates WHERE verdict = 'rejected' GROUP BY rule").fetchall()
        )
        db.close()
        kept = (run_dir / "data" / "kept.jsonl").read_text().count("\n")
        candidates = (run_dir / "data" / "candidates.jsonl").read_text().count("\n")
        assert f"method: {method}" in method_in_config
        assert (f"steer: {str(arm == 'sedi-steer').lower()}" in method_in_config) or method == "self-instruct"
        assert row["config_digest"] == table["runs"][arm][0]["config_digest"] == digest  # the config it really ran
        rule = "every-method" if arm == "relaxed-filter-only" else "sedi"
        assert f"embedding_rule: {rule}" in method_in_config
        assert ("rouge_threshold: 0.85" in method_in_config) == (arm == "relaxed-filter-only")
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
    assert table["baseline"] == "self-instruct"
    assert len({row["config_digest"] for row in table["arms"].values()}) == 4  # four different configs ran
    a, d, r, p = (table["arms"][arm] for arm in arms)
    cpk = {arm: table["arms"][arm]["calls"] / table["arms"][arm]["kept"] for arm in arms}
    assert table["calls_per_kept_ratio"] == cpk["default"] / cpk["self-instruct"]  # the product over the baseline
    assert table["calls_per_kept_ratio_paper"] is None  # sedi-paper did not run
    assert table["calls_per_kept_ratio_published"] == cpk["default"] / cpk["self-instruct-published"]
    for arm in list(arms)[1:]:  # every other arm over the baseline, with its interval and verdict
        pair = table["ratios"][f"{arm} over self-instruct"]
        assert pair["ratio"] == cpk[arm] / cpk["self-instruct"] and pair["ci95"][0] < pair["ratio"] < pair["ci95"][1]
        assert pair["verdict"] == stats.verdict(pair["ratio"], tuple(pair["ci95"]))
    # Tokens and USD per kept task, the SeDi arms over the baseline (one seed: the arms' own totals).
    tpk = {arm: (row["prompt_tokens"] + row["completion_tokens"]) / row["kept"] for arm, row in table["arms"].items()}
    usd = {arm: row["cost_usd"] / row["kept"] for arm, row in table["arms"].items()}
    assert table["tokens_per_kept_ratio"] == pytest.approx(tpk["default"] / tpk["self-instruct"])
    assert table["usd_per_kept_ratio"] == pytest.approx(usd["default"] / usd["self-instruct"])
    assert table["tokens_per_kept_ratio_paper"] is None and table["usd_per_kept_ratio_paper"] is None
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
    cells = " | ".join(f"{x['calls']:,.4g}" for x in (a, d, r, p))
    assert f"| API calls | {cells} |" in markdown
    assert f"| config digest (seed 0) | {' | '.join(x['config_digest'] for x in (a, d, r, p))} |" in markdown
    for arm in list(arms)[1:]:
        words = ratio_words(table["ratios"][f"{arm} over self-instruct"])
        assert f"Calls per kept task, {arm} over self-instruct: {words}." in markdown and "95% interval" in words
    assert f"Tokens per kept task: {table['tokens_per_kept_ratio']:.3f}x; cost per kept task: " in markdown
    assert f"| cost per kept task (USD) | {a['usd_per_kept']:,.4g} |" in markdown

    # The benchmark's JSON line from the same comparison: per-arm request shapes from the runs' databases.
    bench = load_script("bench_api_efficiency")
    line = bench.summarise(table)
    row, status = table["arms"]["default"], read_summary(out / "default")
    assert line["calls_per_kept_ratio_default"] == round(table["calls_per_kept_ratio"], 4)
    assert line["calls_per_kept_ratio_default_ci95"] == [round(v, 4) for v in table["calls_per_kept_ratio_ci95"]]
    assert "calls_per_kept_ratio_self_instruct" not in line and line["kept_self_instruct"] == a["kept"]
    # one generation request per call here (alpaca prompts, no failed call), so the shapes follow from the totals
    assert line["candidates_per_request_default"] == round(row["candidates"] / row["calls"], 4)
    assert line["kept_per_request_default"] == round(row["kept"] / row["calls"], 4)
    assert line["truncated_request_share_default"] == round(status["truncated_responses"] / row["calls"], 4)
    assert line["rejection_shares_default"] == {k: round(n / row["candidates"], 4) for k, n in sorted(
        row["rejected_by_rule"].items())}  # fmt: skip
    assert line["repair_calls_default"] == status.get("repair_calls")
    assert line["config_digest_default"] == row["config_digest"] and len(line["per_seed_default"]) == 1

    report = sedi("report", str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "report.html").read_text()
    assert "self-instruct-published" in html and "sedi" in html and html.count("data:image/png;base64,") >= 7
    for arm in list(arms)[1:]:  # each ratio with its interval, in the words of comparison.md
        words = ratio_words(table["ratios"][f"{arm} over self-instruct"])
        assert html_lib.escape(f"Calls per kept task, {arm} over self-instruct: {words}.") in html
    digests = ", ".join(f"{arm} {table['arms'][arm]['config_digest']}" for arm in arms)
    assert f"Config digests (seed 0): {digests}." in html
    assert sorted(p.name for p in (out / "report").glob("*.png"))

    # --summarise recounts the same runs from their databases: the same table, digests included...
    again = bench.summarise_runs(out, list(arms), 1, answered=False, common=True)
    for arm in arms:
        assert again["runs"][arm][0]["rounds_counted"] == len(table["runs"][arm][0]["rounds"])
        assert again["runs"][arm][0]["config_digest"] == table["runs"][arm][0]["config_digest"]
        assert [list(r) for r in again["runs"][arm][0]["rounds"]] == table["runs"][arm][0]["rounds"]
    assert again["ratios"] == table["ratios"]
    # ...and an attempt that was never answered is a call, but not with --answered.
    db = sqlite3.connect(out / "default" / "sedi.db")
    with db:
        db.execute("UPDATE calls SET status = 'interrupted' WHERE id = (SELECT MIN(id) FROM calls)")
    db.close()
    for answered, fewer in ((False, 0), (True, 1)):
        recount = bench.summarise_runs(out, ["self-instruct", "default"], 1, answered=answered, common=False)
        assert recount["runs"]["default"][0]["calls"] == table["runs"]["default"][0]["calls"] - fewer


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
    assert (
        "Tokens per kept task: 0.750x; cost per kept task: unknown (no teacher.prices, or usage not reported)."
        in markdown
    )


def _row(calls: int, kept: int, rounds: list[tuple[float, float]], digest: str) -> dict[str, Any]:
    return {"calls": calls, "kept": kept, "calls_per_kept": calls / kept, "prompt_tokens": 10 * calls,
            "completion_tokens": 5 * calls, "cost_usd": None, "cost_known": False, "rejected_by_rule": {"rouge": 3},
            "rounds": rounds, "config_digest": digest}  # fmt: skip


def test_every_arm_is_compared_with_the_first_and_the_headline_is_default_over_the_baseline() -> None:
    # Two seeds of 40 calls in 4 rounds; the baseline keeps about 10 a round, `default` about 20 (clearly fewer
    # calls per kept task), `sedi-paper` 6 to 15 (no clear difference), `relaxed-filter-only` about 5 (more).
    def seeds(kept: list[int], digest: str) -> list[dict[str, Any]]:
        rounds = [(10.0, float(k)) for k in kept]
        return [_row(40, sum(kept), rounds, f"{digest}-{s}") for s in (0, 1)]

    runs = {"self-instruct": seeds([8, 12, 11, 9], "a"), "default": seeds([18, 22, 21, 19], "b"),
            "sedi-paper": seeds([6, 15, 7, 14], "c"), "relaxed-filter-only": seeds([4, 6, 5, 5], "d")}  # fmt: skip
    table = tabulate(runs, [0, 1], "budget")
    assert table["arm_order"] == list(runs) and table["baseline"] == "self-instruct"
    verdicts = {name: (pair["verdict"], pair["ratio"]) for name, pair in table["ratios"].items()}
    assert verdicts == {
        "default over self-instruct": ("fewer", pytest.approx(0.5)),
        "sedi-paper over self-instruct": ("no clear difference in", pytest.approx(40 / 42)),
        "relaxed-filter-only over self-instruct": ("more", pytest.approx(2.0)),
    }
    low, high = table["calls_per_kept_ratio_ci95"]
    assert table["calls_per_kept_ratio"] == pytest.approx(0.5) and low <= 0.5 <= high < 1
    assert table["calls_per_kept_ratio_paper"] == pytest.approx(40 / 42)
    assert table["calls_per_kept_ratio_published"] is None  # its arms did not run
    assert table["usd_per_kept_ratio"] is None  # no prices: unknown, never 0
    assert table["arms"]["default"]["config_digest"] == "b-0"  # the first seed's config; each row has its own
    markdown = _markdown(table)
    assert "Calls per kept task, default over self-instruct: 0.500 (95% interval" in markdown
    assert "Calls per kept task, relaxed-filter-only over self-instruct: 2.000 (95% interval" in markdown
    assert "): more calls." in markdown and "): no clear difference in calls." in markdown
    assert "| config digest (seed 0) | a-0 | b-0 | c-0 | d-0 |" in markdown
    assert "- relaxed-filter-only: The baseline with SeDi's relaxed filter alone" in markdown
    # A baseline other than self-instruct: every arm over it, and the headline pairs when their arms ran.
    other = tabulate({arm: runs[arm] for arm in ("sedi-paper", "default")}, [0, 1], "kept")
    assert list(other["ratios"]) == ["default over sedi-paper"] and other["calls_per_kept_ratio"] is None


@pytest.mark.slow
def test_the_report_of_a_comparison_says_each_ratio_as_the_table_does_and_marks_only_clear_differences(
    tmp_path: Path,
) -> None:
    out = tmp_path / "cmp"
    dirs = {arm: write_sample_run(out / arm, method, seed=i + 1) for i, (arm, method) in enumerate(
        (("self-instruct", "self-instruct"), ("default", "sedi"), ("sedi-paper", "sedi")))}  # fmt: skip
    table = tabulate({arm: [run_row(d) | {"config_digest": arm}] for arm, d in dirs.items()}, [0], "kept")
    (out / "comparison.json").write_text(json.dumps(table))
    page = write_report(list(dirs.values()), out).read_text(encoding="utf-8")
    for arm in ("default", "sedi-paper"):
        words = ratio_words(table["ratios"][f"{arm} over self-instruct"])
        assert "95% interval" in words and "no clear difference in calls" in words  # a few kept tasks each
        assert html_lib.escape(f"Calls per kept task, {arm} over self-instruct: {words}.") in page
        assert f"Calls per kept task, {arm} over self-instruct: {words}." in _markdown(table)
    assert "Config digests (seed 0): self-instruct self-instruct, default default, sedi-paper sedi-paper." in page
    cells = re.search(r'<tr data-metric="calls_per_kept">(.*?)</tr>', page)
    assert cells is not None and len(set(re.findall(r"<td>([^<]*)</td>", cells.group(1)))) == 3  # all differ ...
    assert 'class="best"' not in cells.group(1)  # ... yet none is clearly better
    # 0.421 against 0.615 calls per kept task at 8 calls each (19 and 13 kept): 95% interval 0.34x to 1.4x.
    summaries = [{"calls": 8, "kept": 13, "cost_known": True}, {"calls": 8, "kept": 19, "cost_known": True}]
    assert clearly_better("calls_per_kept", summaries) == set()
    big = [{"calls": 80, "kept": 130, "cost_known": True}, {"calls": 80, "kept": 190, "cost_known": True}]
    assert clearly_better("calls_per_kept", big) == {1}  # 10x the runs: 0.68x, 95% interval 0.55x to 0.86x
    assert clearly_better("calls_per_kept", big[::-1]) == {0}  # the baseline, clearly better than every other
    unknown = [{"cost_usd": None, "kept": 5, "cost_known": False}, {"cost_usd": 1.0, "kept": 50, "cost_known": True}]
    assert clearly_better("usd_per_kept", unknown) == set() and clearly_better("calls_per_kept", summaries[:1]) == set()
