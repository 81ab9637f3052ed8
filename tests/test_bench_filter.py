"""The filter benchmark's extrapolation rests on one count: the pairs the reference loop scores. That count,
taken from our ROUGE-L filter over the whole stream, must equal what the reference itself scores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("rouge_score")
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from _bench_common import read_texts  # noqa: E402
from bench_filter import reference_pairs, run_reference_prefix  # noqa: E402

DATA = Path(__file__).parent / "data"
SEEDS = Path(__file__).resolve().parent.parent / "sedi" / "data" / "seed_tasks.jsonl"


def test_pairs_counted_by_our_filter_equal_the_reference_loops() -> None:
    seeds = read_texts(SEEDS)[:40]
    # T0 prompts share templates, so part of the stream is rejected and the pool grows unevenly.
    candidates = read_texts(DATA / "t0_sample.jsonl")[:60]
    measured = run_reference_prefix(seeds, candidates, 0.85, workers=1, budget=1e9, step=20)
    assert measured.n == 60 and 0 < measured.kept < 60
    assert measured.pairs == reference_pairs(seeds, candidates, 0.85, workers=1, batch=20)
    assert 0 < measured.half_pairs < measured.pairs and 0 < measured.half_seconds < measured.seconds
