"""`scripts/bench_in_context.py`: the arms' configs differ only where they should, and the JSON line's ratios come
from the runs' numbers (rows whose answers are known; no run is started)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.sample_run import write_sample_run
from sedi.config.model import load_config
from sedi.experiment.arms import resolve
from tests.helpers import SCRIPTS, load_script

SCRIPT = SCRIPTS / "bench_in_context.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_script("bench_in_context")


def test_split_arm_differs_from_the_method_as_stated_only_in_its_in_context_tasks(bench: Any) -> None:
    base = load_config(None, ["budget.max_calls=64", "generation.calls_per_round=16"])
    paper = bench.arm_config(base, "sedi-paper", 2).model_dump(mode="json")
    split = bench.arm_config(base, "in-context-split", 2).model_dump(mode="json")
    assert bench.arm_config(base, "sedi-split", 2).model_dump(mode="json") == split  # the old name: same config
    assert bench.arm_config(base, "default", 2) == resolve(base, "default", 2, "budget")  # as sedi compare runs it
    baseline = bench.arm_config(base, "self-instruct", 2).model_dump(mode="json")
    assert paper["method"] == split["method"] == "sedi" and baseline["method"] == "self-instruct"
    assert (paper["feedback"]["in_context"], split["feedback"]["in_context"]) == ("pool", "split")
    assert not split["feedback"]["steer"] and split["run"]["seed"] == 2 and split["budget"]["max_calls"] == 64
    split["feedback"]["in_context"] = "pool"
    assert split == paper


def row(calls: int, kept: int, rounds: list[tuple[float, float]], diversity: float) -> dict[str, Any]:
    return {"calls": calls, "kept": kept, "calls_per_kept": calls / kept, "rounds": rounds,
            "prompt_tokens": 100 * calls, "completion_tokens": 50 * calls, "cost_usd": 0.0,
            "diversity_mean_cosine_distance": diversity, "topics_covered": 20, "heldout_loss": None}  # fmt: skip


def test_summary_pools_seeds_and_pairs_rounds(bench: Any) -> None:
    rows = {
        "self-instruct": [row(32, 40, [(16, 20), (16, 20)], 0.9), row(32, 60, [(16, 30), (16, 30)], 0.8)],
        "sedi-split": [row(32, 50, [(16, 25), (16, 25)], 0.7), row(32, 70, [(16, 35), (16, 35)], 0.8)],
    }
    out = bench.summarise(rows)
    assert out["calls_per_kept_self_instruct"] == round(64 / 100, 4)
    assert out["calls_per_kept_sedi_split"] == round(64 / 120, 4)
    assert out["sedi_split_over_self_instruct"] == pytest.approx(100 / 120, abs=1e-4)
    assert out["sedi_split_over_self_instruct_per_seed"] == [0.8, round(60 / 70, 4)]
    low, high = out["sedi_split_over_self_instruct_ci95"]
    assert low <= out["sedi_split_over_self_instruct"] <= high < 1  # every resample keeps more with the split
    assert out["diversity_mean_cosine_distance_sedi_split"] == 0.75 and out["heldout_loss_sedi_split"] is None
    assert "sedi_paper_over_self_instruct" not in out  # an arm that did not run has no ratio
    assert out["sedi_split_over_self_instruct_verdict"] == "fewer"
    pairs = bench._pairs(["self-instruct", "in-context-split", "sedi-paper"])
    assert pairs == [("self-instruct", "in-context-split"), ("self-instruct", "sedi-paper"),
                     ("sedi-paper", "in-context-split")]  # fmt: skip


@pytest.mark.slow
def test_unknown_arm_is_refused_before_anything_runs(tmp_path: Path) -> None:
    run = [sys.executable, str(SCRIPT), "--run-dir", str(tmp_path / "b"), "--arms", "self-instruct,sedi"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "sedi-steer" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_report_only_summarises_existing_run_directories_under_the_old_arm_name(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_sample_run(tmp_path / f"seed-{seed}" / "self-instruct", "self-instruct", seed=seed)
        write_sample_run(tmp_path / f"seed-{seed}" / "sedi-split", "sedi", seed=seed + 5)
    run = [sys.executable, str(SCRIPT), "--run-dir", str(tmp_path), "--repeat", "2", "--report-only"]
    result = subprocess.run([*run, "--arms", "self-instruct,sedi-split"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["seeds"] == [0, 1] and [r["config_digest"] for r in out["per_seed_sedi_split"]] == ["digest"] * 2
    rows = out["per_seed_self_instruct"]
    assert out["calls_per_kept_self_instruct"] == round(sum(r["calls"] for r in rows) / sum(r["kept"] for r in rows), 4)
    assert "sedi_split_over_self_instruct_ci95" in out and not list(tmp_path.glob("seed-*/*.yaml"))  # nothing written
