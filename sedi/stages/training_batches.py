"""Diversity after filtering: training batches composed one task per cluster, and the numbers each round
reports (keep rate, diversity of the kept set, topics covered) for both methods alike.

Embeddings come from the run's encoder, whose on-disk cache (``embeddings.sqlite`` in the run dir)
means a resumed run never embeds a text twice.
"""

from __future__ import annotations

import json
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
from sedi._types import EncodeFn
from sedi.config.model import SediConfig
from sedi.stages.steering import seed_topic_labels
from sedi.store.db import RunStore

BatchRow = tuple[int, int, str, int | None, float | None]  # round, index, task ids (JSON), clusters, distance


def round_kept(store: RunStore, round_index: int) -> list[tuple[int, str]]:
    rows = store.db.execute(
        "SELECT c.id, c.instruction FROM candidates c JOIN requests q ON q.request_key = c.request_key "
        "WHERE c.round = ? AND c.verdict = 'kept' ORDER BY q.sample_index, c.position",
        (round_index,),
    )
    return [(int(r[0]), str(r[1])) for r in rows]


def compose_round_batches(store: RunStore, config: SediConfig, encode: EncodeFn, round_index: int) -> list[list[int]]:
    """Cluster the round's kept tasks and compose batches taking at most one task per cluster while the
    clusters allow it; stored in the ``batches`` table (idempotent)."""
    kept = round_kept(store, round_index)
    if not kept:
        return []
    ids = [i for i, _ in kept]
    vectors = np.asarray(encode([text for _, text in kept]), dtype=np.float32)
    size = config.student.train.per_device_batch_size
    k = config.batches.n_clusters or default_n_clusters(len(kept), size)
    seed = config.run.seed * 1000 + round_index  # a different but reproducible clustering per round
    labels = cluster(vectors, k, seed=seed)
    batches = compose_batches(ids, labels, size, seed=seed, leftover=config.batches.leftover)
    position = {task_id: n for n, task_id in enumerate(ids)}
    rows: list[BatchRow] = []
    for index, batch in enumerate(batches):
        members = [position[t] for t in batch]
        rows.append(
            (
                round_index,
                index,
                json.dumps(batch),
                len({int(labels[m]) for m in members}),
                mean_pairwise_cosine_distance(vectors[members]),
            )
        )
    _store_batches(store, round_index, rows)
    return batches


def _store_batches(
    store: RunStore, round_index: int, rows: list[tuple[int, int, str, int | None, float | None]]
) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM batches WHERE round = ?", (round_index,))
        db.executemany(
            "INSERT INTO batches (round, batch_index, task_ids, clusters, mean_cosine_distance) VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def sequential_batches(store: RunStore, config: SediConfig, round_index: int) -> list[list[int]]:
    """The baseline's batches: kept tasks in the order they were generated, no composition."""
    ids = [i for i, _ in round_kept(store, round_index)]
    size = config.student.train.per_device_batch_size
    batches = [ids[start : start + size] for start in range(0, len(ids), size)]
    _store_batches(store, round_index, [(round_index, n, json.dumps(b), None, None) for n, b in enumerate(batches)])
    return batches


def record_round_metrics(
    store: RunStore, config: SediConfig, encode: EncodeFn, round_index: int, seeds: Sequence[str]
) -> dict[str, float]:
    """Cumulative counts and the diversity of everything kept so far, measured the same way for both methods."""
    db = store.db
    calls = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    candidates = db.execute("SELECT COUNT(*) FROM candidates WHERE round <= ?", (round_index,)).fetchone()[0]
    in_round = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(verdict = 'kept'), 0) FROM candidates WHERE round = ?", (round_index,)
    ).fetchone()
    kept_sql = "SELECT instruction FROM candidates WHERE verdict = 'kept' AND round <= ? ORDER BY id"
    kept_texts = [r[0] for r in db.execute(kept_sql, (round_index,))]
    metrics: dict[str, float] = {
        "calls": float(calls),
        "candidates": float(candidates),
        "kept": float(len(kept_texts)),
        "keep_rate": float(in_round[1]) / in_round[0] if in_round[0] else 0.0,
        "embedding_rejects": float(
            db.execute(
                "SELECT COUNT(*) FROM candidates WHERE rule = 'embedding' AND round <= ?", (round_index,)
            ).fetchone()[0]
        ),
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
    batch_rows = db.execute(
        "SELECT AVG(clusters), AVG(mean_cosine_distance) FROM batches WHERE round = ?", (round_index,)
    ).fetchone()
    if batch_rows[0] is not None:
        metrics["batch_clusters_mean"] = float(batch_rows[0])
        metrics["batch_mean_cosine_distance"] = float(batch_rows[1])
    store.record_metrics(round_index, metrics)
    return metrics
