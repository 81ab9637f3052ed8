"""The filter benchmark. Its extrapolation rests on one count: the pairs the reference loop scores. That count,
taken from our ROUGE-L filter over the whole stream, must equal what the reference itself scores. Its scale mode
must say which backend embedded and how far that is from float32 torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.filter_reference import SAMPLE_CORPUS, read_texts, reference_pairs, run_reference_prefix
from sedi.config.seeds import bundled_path

pytest.importorskip("rouge_score")


def test_pairs_counted_by_our_filter_equal_the_reference_loops() -> None:
    seeds = read_texts(bundled_path("seed_tasks.jsonl"))[:40]
    # T0 prompts share templates, so part of the stream is rejected and the pool grows unevenly.
    candidates = read_texts(SAMPLE_CORPUS)[:60]
    measured = run_reference_prefix(seeds, candidates, 0.85, workers=1, budget=1e9, step=20)
    assert measured.n == 60 and 0 < measured.kept < 60
    assert measured.pairs == reference_pairs(seeds, candidates, 0.85, workers=1, batch=20)
    assert 0 < measured.half_pairs < measured.pairs and 0 < measured.half_seconds < measured.seconds


@pytest.mark.slow
def test_the_scale_mode_reports_its_backend_and_checks_it_against_float32_torch() -> None:
    """`bench_filter.py` above `--real-max`: real embeddings for timing, derived vectors for the index, the
    approximate index checked on a prefix, and the encoder's backend checked against float32 torch."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_filter.py"
    args = ["--limit", "3000", "--real-max", "100", "--embed-sample", "120", "--agreement-prefix", "2000"]
    args += ["--index", "ivf", "--backend-check", "120"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 3000 and result["kept"] + result["rejected_by_embedding"] == 3000
    assert result["agreement_prefix"] == 2000 and result["agreement_with_exact"] == 1.0  # IVF untrained: exact
    assert result["backend"] == "openvino" and result["backend_checked"] == 120
    share = result["seconds"] / (result["embed_ms_per_text"] / 1000 * 3000 + result["seconds"])
    assert 0 < result["filter_share_projected"] < 1
    assert result["filter_share_projected"] == pytest.approx(share, abs=0.01)
    assert result["backend_agreement"] >= 0.995 and result["backend_min_cosine"] > 0.999
