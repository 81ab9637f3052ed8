"""`scripts/bench_api_totals.py`: the benchmark's JSON line from recorded per-seed totals (the committed results
file, and a small file whose answers are known)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs the script in a Python process

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_api_totals.py"
RESULTS = SCRIPT.parent / "results" / "bench_api_150.json"


def run_script(path: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON line
    return json.loads(lines[0])


def arm(calls: int, kept: int, diversity: float, heldout: float | None) -> dict[str, object]:
    counts = {"calls": calls, "answered": calls - 2, "kept": kept, "promotions": 0, "demotions": 0}
    return counts | {"diversity": diversity, "vendi": 90.0, "topics": 30, "heldout_loss": heldout}


def test_known_totals_give_the_pooled_ratios_and_skip_a_missing_evaluation(tmp_path: Path) -> None:
    seeds = {
        "0": {"arms": {"self-instruct": arm(150, 300, 0.9, 2.5), "sedi-paper": arm(150, 250, 0.8, 2.4)}},
        "1": {"arms": {"self-instruct": arm(150, 200, 0.7, None), "sedi-paper": arm(150, 250, 0.6, 2.6)}},
    }
    for s in seeds.values():
        s["arms"]["sedi"] = arm(150, 150, 0.5, 2.0)
    path = tmp_path / "totals.json"
    path.write_text(json.dumps({"seeds": seeds}))
    result = run_script(path)
    assert result["calls_per_kept_ratio_paper"] == pytest.approx((300 / 500) / (300 / 500), abs=1e-4)
    assert result["calls_per_kept_ratio"] == pytest.approx((300 / 300) / (300 / 500), abs=1e-4)
    assert result["calls_per_kept_ratio_paper_per_seed"] == pytest.approx([300 / 250, 200 / 250], abs=1e-4)
    assert result["answered_per_kept_sedi"] == pytest.approx(296 / 300, abs=1e-4)
    assert result["diversity_self_instruct"] == pytest.approx(0.8) and result["heldout_loss_self_instruct"] == 2.5
    low, high = result["calls_per_kept_ratio_ci95"]
    assert low < result["calls_per_kept_ratio"] < high
    assert result["seeds"] == [0, 1]


def test_the_committed_150_call_results_reproduce_their_table() -> None:
    recorded = json.loads(RESULTS.read_text())["seeds"]
    result = run_script(RESULTS)
    calls = {a: sum(s["arms"][a]["calls"] for s in recorded.values()) for a in ("self-instruct", "sedi")}
    kept = {a: sum(s["arms"][a]["kept"] for s in recorded.values()) for a in ("self-instruct", "sedi")}
    ratio = (calls["sedi"] / kept["sedi"]) / (calls["self-instruct"] / kept["self-instruct"])
    assert result["calls_per_kept_ratio"] == pytest.approx(ratio, abs=1e-4)
    assert result["seeds"] == [0, 1, 2]
    per_seed = [
        (s["arms"]["sedi"]["calls"] / s["arms"]["sedi"]["kept"])
        / (s["arms"]["self-instruct"]["calls"] / s["arms"]["self-instruct"]["kept"])
        for _, s in sorted(recorded.items(), key=lambda item: int(item[0]))
    ]
    assert result["calls_per_kept_ratio_per_seed"] == pytest.approx(per_seed, abs=1e-4)
    for name in ("", "_paper", "_steer"):
        low, high = result[f"calls_per_kept_ratio{name}_ci95"]
        assert low < result[f"calls_per_kept_ratio{name}"] < high
