"""Diversity measures on embedding vectors (numpy only), for reports and for comparing batch compositions.

- Mean pairwise cosine distance: the average dissimilarity of two distinct items; cheap and intuitive,
  but blind to structure (two tight, far-apart clusters score high).
- Clusters covered: how many topics a set touches, given cluster labels.
- Vendi score (Friedman & Dieng, 2023): the exponential of the entropy of the eigenvalues of ``K/n``,
  with ``K`` the cosine similarity matrix; the "effective number of distinct items" -- 1 for n copies of
  one item, n for n mutually orthogonal items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BatchDiversity",
    "batch_diversity",
    "clusters_covered",
    "mean_pairwise_cosine_distance",
    "topics_covered",
    "vendi_score",
]


def _unit_rows(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    # float64: the sums below cancel large terms, where float32 would leave visible rounding error.
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(0 if matrix.size == 0 else 1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)  # a zero vector stays zero: similarity 0 to everything


def mean_pairwise_cosine_distance(vectors: npt.ArrayLike) -> float:
    """Mean of ``1 - cos(a, b)`` over unordered pairs of distinct rows; 0.0 for fewer than two rows.

    Uses ``sum_{i<j} <x_i, x_j> = (|sum_i x_i|^2 - sum_i |x_i|^2) / 2``, so it costs O(n·d), not O(n²·d).
    """
    unit = _unit_rows(vectors)
    n = len(unit)
    if n < 2:
        return 0.0
    total = unit.sum(axis=0)
    pair_sum = (float(total @ total) - float((unit * unit).sum())) / 2
    return max(0.0, 1.0 - pair_sum / (n * (n - 1) / 2))


def clusters_covered(labels: Sequence[int] | npt.NDArray[np.integer]) -> int:
    """Number of distinct labels; negative labels (noise / unassigned) do not count."""
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    return len(np.unique(array[array >= 0]))


def topics_covered(vectors: npt.ArrayLike, reference_labels: npt.ArrayLike, reference: npt.ArrayLike) -> int:
    """How many reference topics a set touches: each row goes to the topic whose centroid (mean of the
    reference rows with that label) is most cosine-similar. With one fixed reference (say, the seed tasks
    clustered once), two datasets are compared on the same topics, unlike clustering each on its own."""
    unit, ref = _unit_rows(vectors), _unit_rows(reference)
    labels = np.asarray(reference_labels, dtype=np.int64).reshape(-1)
    if len(unit) == 0 or len(ref) == 0:
        return 0
    topics = np.unique(labels)
    centroids = _unit_rows(np.stack([ref[labels == t].mean(axis=0) for t in topics]))
    return len(np.unique((unit @ centroids.T).argmax(axis=1)))


def vendi_score(vectors: npt.ArrayLike) -> float:
    """Vendi score with cosine similarity; 0.0 for no rows, between 1 and n otherwise.

    The non-zero eigenvalues of ``K = X Xᵀ`` (n×n) equal those of ``Xᵀ X`` (d×d), so the smaller of the two
    is decomposed: for n > d that is the d×d Gram matrix. Eigenvalues are divided by their sum (the trace,
    which is n for unit rows) so that zero vectors cannot push the score out of range.
    """
    unit = _unit_rows(vectors)
    n = len(unit)
    if n == 0:
        return 0.0
    gram = unit.T @ unit if n > unit.shape[1] else unit @ unit.T
    eigenvalues = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    total = eigenvalues.sum()
    if total <= 0:
        return 1.0  # all rows zero: no direction at all, count them as one item
    p = eigenvalues[eigenvalues > 0] / total
    return float(math.exp(-float((p * np.log(p)).sum())))


@dataclass(frozen=True, slots=True)
class BatchDiversity:
    """Diversity of one batch; ``clusters`` is ``None`` when no labels were given."""

    size: int
    mean_pairwise_cosine_distance: float
    vendi_score: float
    clusters: int | None


def batch_diversity(
    vectors_by_batch: Sequence[npt.ArrayLike],
    labels_by_batch: Sequence[Sequence[int] | npt.NDArray[np.integer]] | None = None,
) -> list[BatchDiversity]:
    """Per batch: size, mean pairwise cosine distance, Vendi score and (with labels) clusters covered."""
    if labels_by_batch is not None and len(labels_by_batch) != len(vectors_by_batch):
        raise ValueError(f"{len(vectors_by_batch)} batches of vectors but {len(labels_by_batch)} of labels")
    stats = []
    for i, vectors in enumerate(vectors_by_batch):
        unit = _unit_rows(vectors)
        stats.append(
            BatchDiversity(
                size=len(unit),
                mean_pairwise_cosine_distance=mean_pairwise_cosine_distance(unit),
                vendi_score=vendi_score(unit),
                clusters=None if labels_by_batch is None else clusters_covered(labels_by_batch[i]),
            )
        )
    return stats
