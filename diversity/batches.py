"""Cluster tasks by embedding and compose batches that each draw from as many clusters as possible.

SeDi-Instruct builds each training batch from diverse tasks. Shuffling alone lets a batch pick several
tasks of one big topic cluster; here each batch takes at most one task per cluster while enough distinct
clusters still have unused tasks. Clusters with the most remaining tasks are served first, so large
clusters are spread over all batches instead of piling up in the last ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Leftover", "cluster", "compose_batches", "default_n_clusters"]

Leftover = Literal["mix", "drop"]
IntArray = npt.NDArray[np.int64]


def default_n_clusters(n_tasks: int, batch_size: int) -> int:
    """``max(batch_size, round(sqrt(n_tasks)))``, clamped to ``n_tasks``.

    At least ``batch_size`` clusters, so that a full batch can take one task per cluster; ``sqrt(n)`` is
    the usual rule of thumb that grows the number of topics with the data while keeping clusters large
    enough to be topics rather than single tasks. Never more clusters than tasks.
    """
    if n_tasks <= 0:
        return 0
    return min(n_tasks, max(batch_size, round(math.sqrt(n_tasks)), 1))


def cluster(vectors: npt.ArrayLike, n_clusters: int, seed: int = 0, *, niter: int = 20) -> IntArray:
    """K-means labels (0..k-1) of the rows of ``vectors``, with ``k = min(n_clusters, n)``; deterministic per seed.

    Fewer than two rows or clusters give all zeros. Spherical k-means (unit centroids), because the
    vectors are compared by cosine everywhere else.
    """
    import faiss

    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(matrix)
    k = min(n_clusters, n)
    if n < 2 or k < 2:
        return np.zeros(n, dtype=np.int64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {matrix.shape}")
    # min_points_per_centroid=1: small inputs are legitimate here, FAISS would only warn about them.
    kmeans = faiss.Kmeans(
        matrix.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    kmeans.train(matrix)
    _, labels = kmeans.index.search(matrix, 1)
    return labels[:, 0].astype(np.int64)


def compose_batches(
    ids: Sequence[int],
    labels: Sequence[int] | npt.NDArray[np.integer],
    batch_size: int,
    seed: int = 0,
    leftover: Leftover = "mix",
) -> list[list[int]]:
    """Split ``ids`` into batches of ``batch_size`` (the last may be shorter) repeating clusters as little as possible.

    Each batch takes one task from each of the ``batch_size`` clusters with the most unused tasks (ties
    broken by an RNG seeded with ``seed``; within a cluster, tasks go in their input order). Once fewer
    clusters than ``batch_size`` have unused tasks, a batch takes every such cluster once, then again
    (round-robin, larger clusters first) until it is full, so repeats are spread as evenly as they can be.

    ``leftover="mix"`` returns every id exactly once. ``leftover="drop"`` discards the last batch when it
    is shorter than ``batch_size`` (its ids appear in no batch), for trainers that need equal batches.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if leftover not in ("mix", "drop"):
        raise ValueError(f"leftover must be 'mix' or 'drop', got {leftover!r}")
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(label_array) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(label_array)} labels")
    rng = np.random.default_rng(seed)
    clusters, inverse = np.unique(label_array, return_inverse=True)
    queues: list[list[int]] = [[] for _ in clusters]
    for task_id, c in zip(ids, inverse.tolist(), strict=True):
        queues[c].append(int(task_id))
    remaining = np.array([len(queue) for queue in queues], dtype=np.int64)
    heads = np.zeros(len(queues), dtype=np.int64)

    batches: list[list[int]] = []
    while remaining.sum() > 0:
        # A fresh random tie-break per batch, so equal clusters take turns being first.
        ties = rng.permutation(len(queues))
        taken = np.zeros(len(queues), dtype=np.int64)
        size = int(min(batch_size, remaining.sum()))
        while taken.sum() < size:
            available = np.flatnonzero(remaining - taken > 0)
            # Fewest taken by this batch first (one per cluster before any repeat), then most unused, then ties.
            order = np.lexsort((ties[available], -(remaining - taken)[available], taken[available]))
            need = size - int(taken.sum())
            round_clusters = available[order]
            round_clusters = round_clusters[taken[round_clusters] == taken[round_clusters[0]]][:need]
            for c in round_clusters.tolist():
                taken[c] += 1
        batch: list[int] = []
        for c in np.flatnonzero(taken).tolist():
            start = int(heads[c])
            batch.extend(queues[c][start : start + int(taken[c])])
        heads += taken
        remaining -= taken
        batches.append(batch)
    if leftover == "drop" and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
