"""The filter benchmark's extrapolation rests on one count: the pairs the reference loop scores. That count,
taken from our ROUGE-L filter over the whole stream, must equal what the reference itself scores."""

from __future__ import annotations

import pytest

from diversity.benchmark import SAMPLE_CORPUS, read_texts, reference_pairs, run_reference_prefix
from sedi.tasks import bundled_path

pytest.importorskip("rouge_score")


def test_pairs_counted_by_our_filter_equal_the_reference_loops() -> None:
    seeds = read_texts(bundled_path("seed_tasks.jsonl"))[:40]
    # T0 prompts share templates, so part of the stream is rejected and the pool grows unevenly.
    candidates = read_texts(SAMPLE_CORPUS)[:60]
    measured = run_reference_prefix(seeds, candidates, 0.85, workers=1, budget=1e9, step=20)
    assert measured.n == 60 and 0 < measured.kept < 60
    assert measured.pairs == reference_pairs(seeds, candidates, 0.85, workers=1, batch=20)
    assert 0 < measured.half_pairs < measured.pairs and 0 < measured.half_seconds < measured.seconds
