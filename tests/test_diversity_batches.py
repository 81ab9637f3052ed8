"""Batch composition (property tests), clustering and diversity metrics; real FAISS, numpy only otherwise."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diversity import (
    batch_diversity,
    cluster,
    clusters_covered,
    compose_batches,
    default_n_clusters,
    mean_pairwise_cosine_distance,
    vendi_score,
)

labels_strategy = st.lists(st.integers(min_value=0, max_value=12), min_size=0, max_size=120)


def _replay(ids: list[int], labels: list[int], batches: list[list[int]], batch_size: int) -> None:
    """Check, batch by batch, that a cluster repeats only when every cluster with unused tasks is in the batch."""
    label_of = dict(zip(ids, labels, strict=True))
    remaining = Counter(labels)
    for batch in batches:
        counts = Counter(label_of[i] for i in batch)
        open_clusters = {c for c, n in remaining.items() if n > 0}
        if any(n > 1 for n in counts.values()):
            assert open_clusters <= set(counts), "repeated a cluster while another had unused tasks"
        else:
            # One per cluster: the batch is full, or it took every cluster that had tasks left.
            assert len(batch) == batch_size or open_clusters <= set(counts)
        # Repeats are spread evenly: no cluster taken two more times than one that still had tasks to give.
        not_exhausted = [counts.get(c, 0) for c in open_clusters if remaining[c] > counts.get(c, 0)]
        if counts and not_exhausted:
            assert max(counts.values()) <= min(not_exhausted) + 1
        remaining.subtract(counts)


@settings(max_examples=200, deadline=None)
@given(labels=labels_strategy, batch_size=st.integers(min_value=1, max_value=9), seed=st.integers(0, 2**32 - 1))
def test_every_id_exactly_once_and_clusters_not_repeated(labels: list[int], batch_size: int, seed: int) -> None:
    ids = [1000 + 3 * i for i in range(len(labels))]
    batches = compose_batches(ids, labels, batch_size, seed)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == sorted(ids)
    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert all(0 < len(batch) <= batch_size for batch in batches)
    _replay(ids, labels, batches, batch_size)


@settings(max_examples=100, deadline=None)
@given(labels=labels_strategy, batch_size=st.integers(min_value=1, max_value=9), seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_batches(labels: list[int], batch_size: int, seed: int) -> None:
    ids = list(range(len(labels)))
    assert compose_batches(ids, labels, batch_size, seed) == compose_batches(ids, labels, batch_size, seed)


@settings(max_examples=100, deadline=None)
@given(labels=labels_strategy, batch_size=st.integers(min_value=2, max_value=9), seed=st.integers(0, 2**32 - 1))
def test_drop_discards_only_a_short_last_batch(labels: list[int], batch_size: int, seed: int) -> None:
    ids = list(range(len(labels)))
    mixed = compose_batches(ids, labels, batch_size, seed, leftover="mix")
    dropped = compose_batches(ids, labels, batch_size, seed, leftover="drop")
    assert all(len(batch) == batch_size for batch in dropped)
    assert dropped == (mixed[:-1] if mixed and len(mixed[-1]) < batch_size else mixed)


def test_different_seeds_can_differ() -> None:
    labels = [i % 10 for i in range(60)]  # ten equal clusters: every batch breaks ties by the RNG
    ids = list(range(60))
    results = {tuple(map(tuple, compose_batches(ids, labels, 4, seed))) for seed in range(5)}
    assert len(results) > 1


def test_big_clusters_are_spread_over_all_batches() -> None:
    labels = [0] * 30 + list(range(1, 31))  # one big cluster and thirty singletons
    # Cluster 0 has the most tasks, so it is in every batch while singletons last, and fills only the rest.
    batches = compose_batches(list(range(60)), labels, 6, seed=3)
    assert [sum(1 for i in batch if labels[i] == 0) for batch in batches] == [1] * 6 + [6] * 4


def test_default_n_clusters() -> None:
    assert default_n_clusters(0, 20) == 0
    assert default_n_clusters(5, 20) == 5
    assert default_n_clusters(100, 20) == 20
    assert default_n_clusters(52_000, 20) == 228


def test_cluster_is_deterministic_and_finds_obvious_groups() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4]
    vectors = np.repeat(centres, 25, axis=0) + 0.05 * rng.standard_normal((100, 8)).astype(np.float32)
    labels = cluster(vectors, 4, seed=7)
    assert labels.shape == (100,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, cluster(vectors, 4, seed=7))
    assert clusters_covered(labels) == 4
    assert all(len(set(labels[g * 25 : (g + 1) * 25].tolist())) == 1 for g in range(4))
    assert cluster(vectors[:1], 4).tolist() == [0]
    assert cluster(vectors[:0], 4).tolist() == []
    assert clusters_covered(cluster(vectors[:3], 10)) <= 3


def test_metrics_sanity() -> None:
    same = np.tile(np.array([[0.6, 0.8, 0.0]], dtype=np.float32), (5, 1))
    assert mean_pairwise_cosine_distance(same) == pytest.approx(0.0, abs=1e-9)
    assert vendi_score(same) == pytest.approx(1.0)
    orthogonal = np.eye(6, dtype=np.float32)
    assert mean_pairwise_cosine_distance(orthogonal) == pytest.approx(1.0)
    assert vendi_score(orthogonal) == pytest.approx(6.0)
    assert vendi_score(3 * orthogonal[:4]) == pytest.approx(4.0)  # scale does not matter
    assert vendi_score(np.zeros((0, 3))) == 0.0 and vendi_score(orthogonal[:1]) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(np.zeros((0, 3))) == 0.0
    assert mean_pairwise_cosine_distance(orthogonal[:1]) == 0.0
    assert clusters_covered([]) == 0 and clusters_covered([3, 3, -1, 5]) == 2


def test_vendi_gram_trick_matches_the_n_by_n_definition() -> None:
    rng = np.random.default_rng(2)
    for n, d in [(40, 5), (5, 40)]:
        x = rng.standard_normal((n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        eigenvalues = np.clip(np.linalg.eigvalsh(x @ x.T / n), 0, None)
        p = eigenvalues[eigenvalues > 1e-12]
        assert vendi_score(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
        pairwise = 1 - (x @ x.T)[np.triu_indices(n, 1)]
        assert mean_pairwise_cosine_distance(x) == pytest.approx(float(pairwise.mean()), rel=1e-9)


def test_batch_diversity_per_batch() -> None:
    stats = batch_diversity([np.eye(3), np.ones((2, 3)), np.zeros((0, 3))], [[0, 1, 2], [4, 4], []])
    assert [s.size for s in stats] == [3, 2, 0]
    assert stats[0].vendi_score == pytest.approx(3.0) and stats[1].vendi_score == pytest.approx(1.0)
    assert [s.clusters for s in stats] == [3, 1, 0]
    assert batch_diversity([np.eye(2)])[0].clusters is None
