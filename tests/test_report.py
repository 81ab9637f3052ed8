"""`sedi report` on synthetic run directories: valid self-contained HTML, real PNGs, numbers that match the store.

The runs are ``benchmarks.sample_run``'s, written through RunStore (so the schema is the real one) with small hand-made
data: two rounds, ten calls, thirty candidates, twelve training steps of which two are attractive.
"""

from __future__ import annotations

import base64
import io
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from benchmarks.sample_run import write_sample_run
from sedi.exceptions import RunDirError
from sedi.report import plots as _plots
from sedi.report.page import PLOTS, _best, load_run, write_report
from sedi.report.summary import read_summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cells(page: str, metric: str) -> list[str]:
    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', page)
    assert row, metric
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))


def _best_cells(page: str, metric: str) -> list[int]:
    """Which cells of a row are marked as the better value."""
    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', page)
    assert row, metric
    return [i for i, attrs in enumerate(re.findall(r"<td([^>]*)>", row.group(1))) if "best" in attrs]


def _number(cell: str) -> float:
    return float(cell.replace("$", "").replace(",", "").replace("%", ""))


def _assert_png(data: bytes) -> None:
    import matplotlib.image

    assert data.startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 1


def _assert_every_plot(page: str, out: Path) -> dict[str, tuple[int, int]]:
    """Every plot is on the page, in order, as a real non-empty PNG identical to the file written beside it;
    returns each plot's (height, width) in pixels."""
    embedded = dict(re.findall(r'<figure id="(\w+)"><img src="data:image/png;base64,([^"]+)"', page))
    assert list(embedded) == [plot.name for plot in PLOTS]
    assert page.count('<img src="data:image/png;base64,') == len(PLOTS) == 7
    import matplotlib.image

    sizes = {}
    for plot in PLOTS:
        png = base64.b64decode(embedded[plot.name])
        assert png == (out / "report" / f"{plot.name}.png").read_bytes()
        _assert_png(png)
        sizes[plot.name] = matplotlib.image.imread(io.BytesIO(png), format="png").shape[:2]
    return sizes


@pytest.mark.slow
def test_single_run_report(tmp_path: Path) -> None:
    run = write_sample_run(tmp_path / "run-a", "sedi")
    page_path = write_report([run], tmp_path / "out")
    assert page_path == tmp_path / "out" / "report.html"
    page = page_path.read_text(encoding="utf-8")

    _assert_every_plot(page, tmp_path / "out")
    assert "http://" not in page and "https://" not in page
    assert "No data yet" not in page
    assert 'class="best"' not in page  # nothing to compare with: no cell is marked better
    assert "(lower is better)" in page and "(higher is better)" in page

    summary = read_summary(run)
    for key in ("calls", "candidates", "kept"):
        assert _number(_cells(page, key)[0]) == summary[key]
    assert _number(_cells(page, "tokens")[0]) == summary["prompt_tokens"] + summary["completion_tokens"]
    assert _number(_cells(page, "cost_usd")[0]) == pytest.approx(summary["cost_usd"], abs=5e-5)
    assert _number(_cells(page, "keep_rate")[0]) == pytest.approx(100 * summary["keep_rate"], abs=0.05)
    assert _number(_cells(page, "calls_per_kept")[0]) == pytest.approx(summary["calls_per_kept"], abs=0.005)
    # Tokens and USD per kept task, checked against the ledger itself (not the summary that computed them).
    cost, tokens, kept = _ledger_totals(run)
    assert summary["tokens_per_kept"] == round(tokens / kept, 2) and summary["usd_per_kept"] == round(cost / kept, 8)
    assert _number(_cells(page, "tokens_per_kept")[0]) == round(tokens / kept)
    assert _number(_cells(page, "usd_per_kept")[0]) == pytest.approx(cost / kept, abs=5e-7)
    assert _cells(page, "heldout_loss") == ["2.400 (round 2)"]  # rounds shown from 1, as the CLI prints them
    assert _cells(page, "diversity_vendi") == ["12.250 (round 2)"]
    assert _cells(page, "promotions") == ["5"] and _cells(page, "demotions") == ["1"]
    # Round time summed over rounds, largest part first, with its share of the total (116 + 45 + 18.5 s).
    assert _cells(page, "time_split") == ["generate 116 s (65%), train 45 s (25%), evaluate 18 s (10%)"]
    assert "sedi (run-a)" in page and "state finished" in page
    assert f"background:{_plots.colour(0)}" in page  # the run's swatch has its plot colour


def _ledger_totals(run_dir: Path) -> tuple[float, int, int]:
    """(USD, prompt + completion tokens, kept tasks), summed straight from the run database."""
    db = sqlite3.connect(run_dir / "sedi.db")
    try:
        cost, tokens = db.execute("SELECT SUM(cost_usd), SUM(prompt_tokens + completion_tokens) FROM calls").fetchone()
        kept = db.execute("SELECT COUNT(*) FROM candidates WHERE verdict = 'kept'").fetchone()[0]
    finally:
        db.close()
    return float(cost), int(tokens), int(kept)


@pytest.mark.slow
def test_cost_per_kept_task_is_unknown_without_prices_never_zero(tmp_path: Path) -> None:
    priced = write_sample_run(tmp_path / "priced", "sedi", seed=1)
    unpriced = write_sample_run(tmp_path / "unpriced", "sedi", seed=2)
    db = sqlite3.connect(unpriced / "sedi.db")
    with db:  # what a start without teacher.prices records (sedi.store.ledger.PRICES_NONE)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('prices', 'none')")
    db.close()
    summary = read_summary(unpriced)
    _, tokens, kept = _ledger_totals(unpriced)
    assert summary["cost_known"] is False and summary["cost_usd"] is None and summary["usd_per_kept"] is None
    assert summary["tokens_per_kept"] == round(tokens / kept, 2)  # tokens are known whatever the prices
    page = write_report([priced, unpriced], tmp_path / "out").read_text(encoding="utf-8")
    priced_cell, unpriced_cell = _cells(page, "usd_per_kept")
    assert unpriced_cell == "unknown (no teacher.prices)" and priced_cell.startswith("$")
    assert _best_cells(page, "usd_per_kept") == []  # nothing to compare with an unknown cost
    costs = [_ledger_totals(run) for run in (priced, unpriced)]
    assert costs[0][1] / costs[0][2] != costs[1][1] / costs[1][2]  # different, yet within the noise of a few
    assert _best_cells(page, "tokens_per_kept") == []  # no cell marked (arm_stats.clearly_better)


def test_loaded_data_matches_the_store(tmp_path: Path) -> None:
    data = load_run(write_sample_run(tmp_path / "run", "sedi"))
    assert data.method == "sedi" and data.label == "sedi (run)"
    assert len(data.kept_curve) == 10 and data.kept_curve[-1] == data.summary["kept"]
    assert data.kept_curve == sorted(data.kept_curve)
    assert sum(p.attractive for p in data.steps) == 2 and len(data.steps) == 12
    assert data.pool[1] == _plots.PoolRound(human=174.0, machine=4.0, promoted=2, demoted=1)
    assert data.round_keep_rate == {0: 0.4, 1: 0.5}


@pytest.mark.slow
def test_run_without_training_data_still_renders(tmp_path: Path) -> None:
    run = write_sample_run(tmp_path / "calls-only", "self-instruct", training=False)
    page = write_report([run], tmp_path / "out").read_text(encoding="utf-8")
    sizes = _assert_every_plot(page, tmp_path / "out")
    # Only the calls-vs-kept curve has data (flat at zero); every other plot says it has none yet.
    assert page.count("No data yet") == len(PLOTS) - 1
    assert "no task has been kept yet" in page
    # Placeholders are short strips, as wide as the plots, so an unfinished run's page is not mostly blank boxes.
    for plot in PLOTS[1:]:
        assert sizes[plot.name][1] == sizes["calls_vs_kept"][1]
        assert sizes[plot.name][0] < sizes["calls_vs_kept"][0] / 2


@pytest.mark.slow
def test_comparison_labels_both_methods(tmp_path: Path) -> None:
    baseline = write_sample_run(tmp_path / "baseline", "self-instruct", seed=1)
    sedi = write_sample_run(tmp_path / "sedi-run", "sedi", seed=2)
    page = write_report([baseline, sedi], tmp_path / "cmp").read_text(encoding="utf-8")
    assert "self-instruct (baseline)" in page and "sedi (sedi-run)" in page
    _assert_every_plot(page, tmp_path / "cmp")
    assert len(_cells(page, "calls")) == 2
    first, second = (read_summary(d)["calls_per_kept"] for d in (baseline, sedi))
    assert f"{second / first:.2f}× the calls per kept task" in page
    # A handful of kept tasks cannot show a difference: the lead gives the interval and says so.
    assert "95% interval" in page and "no clear difference in teacher calls for each kept task" in page
    assert "within the noise of these counts" in page
    # The table says which run is better where a direction is meaningful (seed 2 is the better synthetic run).
    assert _cells(page, "heldout_loss") == ["2.300 (round 2)", "2.200 (round 2)"]
    for metric in ("heldout_loss", "diversity_cosine", "diversity_vendi"):
        assert _best_cells(page, metric) == [1], metric
    assert first != second and _best_cells(page, "calls_per_kept") == []  # the interval includes 1: none marked
    assert _best_cells(page, "kept") == [] and _best_cells(page, "promotions") == []  # no "better" direction
    for i in range(2):  # each run's name carries its colour in the plots
        assert f"background:{_plots.colour(i)}" in page


def test_the_lead_calls_a_difference_only_outside_the_noise() -> None:
    from sedi.report import stats

    # the case that was called a win before: 6 kept against 5 in 8 calls each
    low, high = stats.poisson_ratio_ci(8, 5, 8, 6) or (0.0, 0.0)
    assert low < 1 < high and stats.verdict(stats.ratio(8, 5, 8, 6), (low, high)) == "no clear difference in"
    # 300 kept against 150 in 100 calls each is a real difference
    interval = stats.poisson_ratio_ci(100, 150, 100, 300)
    assert interval is not None and interval[1] < 1 and stats.verdict(0.5, interval) == "fewer"
    assert stats.verdict(2.0, (1.4, 2.9)) == "more" and stats.verdict(None, None) == "no clear difference in"


def test_paired_bootstrap_interval_covers_the_pooled_ratio_and_shrinks_with_data() -> None:
    from sedi.report import stats

    # arm b keeps about twice as many tasks per round as arm a, with round-to-round noise
    rng = __import__("random").Random(3)

    def arm(rate: float, rounds: int) -> list[tuple[float, float]]:
        return [(10.0, float(max(0, round(rng.gauss(rate, 2))))) for _ in range(rounds)]

    small_a, small_b = [arm(5, 3) for _ in range(2)], [arm(10, 3) for _ in range(2)]
    big_a, big_b = [arm(5, 12) for _ in range(5)], [arm(10, 12) for _ in range(5)]
    small = stats.bootstrap_ratio_ci(small_a, small_b)
    big = stats.bootstrap_ratio_ci(big_a, big_b)
    assert small is not None and big is not None
    assert big[0] < 0.5 < big[1] < 1  # the true ratio is 0.5; with 60 paired rounds the interval excludes 1
    assert big[1] - big[0] < small[1] - small[0]
    assert stats.bootstrap_ratio_ci([[(10.0, 0.0)]], [[(10.0, 3.0)]]) is None  # arm a never kept anything


def test_totals_bootstrap_covers_the_pooled_ratio_and_widens_when_seeds_disagree() -> None:
    from sedi.report import stats

    agree_a, agree_b = [(150.0, 300.0)] * 3, [(150.0, 240.0)] * 3  # b needs 1.25x the calls per kept task
    disagree_a, disagree_b = [(150.0, 300.0)] * 3, [(150.0, 180.0), (150.0, 300.0), (150.0, 240.0)]
    agree = stats.totals_bootstrap_ratio_ci(agree_a, agree_b)
    disagree = stats.totals_bootstrap_ratio_ci(disagree_a, disagree_b)
    assert agree is not None and disagree is not None
    assert agree[0] < 1.25 < agree[1] and agree[0] > 1  # 720 against 900 kept: the difference is clear
    assert disagree[1] - disagree[0] > 2 * (agree[1] - agree[0])  # seed-to-seed spread counts, not only Poisson
    assert stats.totals_bootstrap_ratio_ci(agree_a, agree_b) == agree  # seeded: the same interval every time
    assert stats.totals_bootstrap_ratio_ci([(10.0, 0.0)], [(10.0, 3.0)]) is None  # arm a never kept anything


@pytest.mark.slow
def test_plots_draw_three_runs_one_of_them_without_data() -> None:
    """Comparisons are not only pairs, and a run that has just started sits beside finished ones."""
    point = _plots.StepPoint(0, 1, 1.5, True)
    pool = {0: _plots.PoolRound(human=175.0, machine=0.0, promoted=1, demoted=0)}
    pngs = [
        _plots.calls_vs_kept({"a": [1, 2], "b": [0, 0, 1], "c": []}),
        _plots.keep_rate({"a": {0: 0.5}, "b": {0: 1.0, 1: 0.25}, "c": {}}),
        _plots.grad_norms({"a": [point], "b": [point._replace(step=2, round=1)], "c": []}),
        _plots.seed_pool({"a": pool, "b": {}, "c": pool}),
        _plots.heldout_loss({"a": {0: 2.5}, "b": {0: 2.5}, "c": {}}),
        _plots.diversity({"a": {0: 0.7}, "b": {}, "c": {1: 0.8}}, {"a": {}, "b": {0: 9.0}, "c": {}}),
        _plots.rejects_by_rule({"a": {f"rule_{i}": i for i in range(14)}, "b": {"rule_3": 2}, "c": {}}),
    ]
    for png in pngs:
        _assert_png(png)


def test_better_cells_compare_what_is_shown() -> None:
    assert _best("heldout_loss", ["2.300 (round 2)", "2.200 (round 2)"]) == {1}
    assert _best("diversity_vendi", ["2.300 (round 2)", "2.200 (round 2)"]) == {0}
    assert _best("heldout_loss", ["2.300 (round 2)", "2.200 (round 1)"]) == set()  # runs stopped at different rounds
    assert _best("heldout_loss", ["2.200 (round 2)", "2.200 (round 2)"]) == set()  # a tie as shown
    assert _best("calls_per_kept", ["n/a", "0.714"]) == set()
    assert _best("keep_rate", ["43.3%", "46.7%"]) == {1} and _best("keep_rate", ["43.3%"]) == set()
    assert _best("kept", ["13", "14"]) == set()
    assert _best("tokens_per_kept", ["1,200", "900"]) == {1}
    assert _best("usd_per_kept", ["$0.000200", "$0.000100"]) == {1}
    assert _best("usd_per_kept", ["unknown (no teacher.prices)", "$0.000100"]) == set()


def test_same_directory_names_get_distinct_labels(tmp_path: Path) -> None:
    runs = [write_sample_run(tmp_path / side / "run", "sedi") for side in ("a", "b")]
    page = write_report(runs, tmp_path / "out").read_text(encoding="utf-8")
    assert f"sedi ({runs[0]})" in page and f"sedi ({runs[1]})" in page
    assert len(_cells(page, "kept")) == 2


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"nowhere: no sedi run here .*sedi run --run-dir"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(RunDirError):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_last_round_that_generated_nothing_does_not_name_the_diversity_value() -> None:
    from sedi.report.page import RunData, _last

    metrics = {"diversity_mean_cosine_distance": {0: 0.81, 1: 0.84, 2: 0.84}, "calls": {0: 4.0, 1: 8.0, 2: 8.0}}
    cell = _last("diversity_mean_cosine_distance")
    assert cell(RunData(Path("r"), "sedi", {}, metrics=metrics)) == "0.840 (round 2)"  # round 3 sent no call
    metrics["calls"][2] = 9.0
    assert cell(RunData(Path("r"), "sedi", {}, metrics=metrics)) == "0.840 (round 3)"
