"""Diversity after filtering: training batches composed one task per cluster, and the numbers each round
reports (keep rate, diversity of the kept set, topics covered) for both methods alike.

Embeddings come from the run's encoder, whose on-disk cache (``embeddings.sqlite`` in the run dir)
means a resumed run never embeds a text twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diversity import (
    cluster,
    compose_batches,
    default_n_clusters,
    mean_pairwise_cosine_distance,
    topics_covered,
    vendi_score,
)
from sedi.base.vocabulary import EncodeFn
from sedi.config.model import SediConfig
from sedi.stages.steering import seed_topic_labels
from sedi.store import candidates, training
from sedi.store.db import RunStore
from sedi.store.training import BatchRow


def compose_round_batches(store: RunStore, config: SediConfig, encode: EncodeFn, round_index: int) -> list[list[int]]:
    """Cluster the round's kept tasks and compose batches taking at most one task per cluster while the
    clusters allow it; stored in the ``batches`` table (idempotent)."""
    kept = training.round_kept(store, round_index)
    if not kept:
        return []
    ids = [i for i, _ in kept]
    vectors = np.asarray(encode([text for _, text in kept]), dtype=np.float32)
    size = config.student.train.per_device_batch_size
    k = config.training_batches.n_clusters or default_n_clusters(len(kept), size)
    seed = config.run.seed * 1000 + round_index  # a different but reproducible clustering per round
    labels = cluster(vectors, k, seed=seed)
    batches = compose_batches(ids, labels, size, seed=seed, leftover=config.training_batches.leftover)
    position = {task_id: n for n, task_id in enumerate(ids)}
    rows: list[BatchRow] = []
    for index, batch in enumerate(batches):
        members = [position[t] for t in batch]
        rows.append(
            BatchRow(
                round_index,
                index,
                list(batch),
                len({int(labels[m]) for m in members}),
                mean_pairwise_cosine_distance(vectors[members]),
            )
        )
    training.replace_batches(store, round_index, rows)
    return batches


def sequential_batches(store: RunStore, config: SediConfig, round_index: int) -> list[list[int]]:
    """The baseline's batches: kept tasks in the order they were generated, no composition."""
    ids = [i for i, _ in training.round_kept(store, round_index)]
    size = config.student.train.per_device_batch_size
    batches = [ids[start : start + size] for start in range(0, len(ids), size)]
    training.replace_batches(store, round_index, [BatchRow(round_index, n, b) for n, b in enumerate(batches)])
    return batches


def record_round_metrics(
    store: RunStore, config: SediConfig, encode: EncodeFn, round_index: int, seeds: Sequence[str]
) -> dict[str, float]:
    """Cumulative counts and the diversity of everything kept so far, measured the same way for both methods."""
    counts = candidates.round_counts(store, round_index, rule="embedding")
    kept_texts = candidates.kept_instructions(store, through_round=round_index)
    metrics: dict[str, float] = {
        "calls": float(counts.calls),
        "candidates": float(counts.candidates),
        "kept": float(len(kept_texts)),
        "keep_rate": float(counts.round_kept) / counts.round_candidates if counts.round_candidates else 0.0,
        "embedding_rejects": float(counts.rule_rejects),
    }
    if config.teacher.prices is not None:  # the held-out-against-cost curve of the report
        metrics["cost_usd"] = store.spent(config.teacher.prices).cost_usd
    if kept_texts:
        vectors = np.asarray(encode(kept_texts), dtype=np.float32)
        seed_vectors = np.asarray(encode(list(seeds)), dtype=np.float32)
        seed_labels = seed_topic_labels(encode, seeds, config.run.seed)
        metrics["diversity_mean_cosine_distance"] = mean_pairwise_cosine_distance(vectors)
        metrics["diversity_vendi"] = vendi_score(vectors)
        metrics["topics_covered"] = float(topics_covered(vectors, seed_labels, seed_vectors))
    means = training.batch_means(store, round_index)
    if means.clusters is not None:
        metrics["batch_clusters_mean"] = float(means.clusters)
        if means.mean_cosine_distance is not None:
            metrics["batch_mean_cosine_distance"] = float(means.mean_cosine_distance)
    store.record_metrics(round_index, metrics)
    return metrics
