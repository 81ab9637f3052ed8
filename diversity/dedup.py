"""Near-duplicate filter: Self-Instruct's ROUGE-L rule, then an embedding rule for paraphrases it misses.

ROUGE-L is checked first, so a verdict with ``rule == "embedding"`` counts exactly what the embedding
rule removes beyond ROUGE-L. Both rules reject when the similarity is strictly greater than the
threshold, like :class:`~diversity.rouge_filter.RougeFilter`.

Each candidate is compared with the pool and with the candidates kept before it in the same batch;
kept candidates then join the pool. ROUGE-L runs on :class:`RougeFilter` (exact, pruned) and the
embedding rule on :class:`~diversity.index.VectorIndex`. Everything is keyed by caller-chosen integer ids.

Vectors come from the caller, or, when ``check_batch`` gets none, from the ``encoder`` callable for
only the candidates that pass ROUGE-L against the pool: candidates ROUGE-L already rejects are never
embedded, which on a generation stream saves most of the (CPU-bound) embedding time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from diversity.index import IndexKind, VectorIndex, as_matrix
from diversity.rouge import TokenVocabulary, f1_matrix, tokenize
from diversity.rouge_filter import RougeFilter

__all__ = ["DiversityFilter", "DiversityVerdict", "Rule"]

Rule = Literal["rouge", "embedding"]
EncodeFn = Callable[[Sequence[str]], npt.NDArray[np.float32]]

# Candidates compared all-pairs within one step; a generation round is tens, this only bounds huge calls.
_MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class DiversityVerdict:
    """The decision on one candidate, with its nearest neighbours under both measures.

    ``rouge_score`` / ``rouge_nearest_id``: highest ROUGE-L F1 against the pool and earlier kept batch
    members, and whose it is (``None`` when nothing was compared). As in :class:`RougeVerdict`, the score
    of a kept candidate may be a lower bound when pruning skipped pairs.
    ``cosine`` / ``embedding_nearest_id``: the same by embedding; filled whenever the candidate has a
    vector and the pool (or the batch before it) is non-empty, kept or not, so callers can report
    neighbours. They are ``None`` when the embedding rule is off, and, when the filter embedded lazily,
    for candidates ROUGE-L rejected against the pool (never embedded).
    """

    id: int
    kept: bool
    rule: Rule | None
    rouge_score: float
    rouge_nearest_id: int | None
    cosine: float | None
    embedding_nearest_id: int | None


def _normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _pairwise_rouge(texts: Sequence[str], workers: int) -> npt.NDArray[np.float64]:
    """ROUGE-L F1 of every pair of ``texts`` (a batch is small, so all pairs are scored exactly)."""
    vocabulary = TokenVocabulary()
    encoded = [vocabulary.encode(tokenize(text)) for text in texts]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    lcs = process.cdist(encoded, encoded, scorer=LCSseq.similarity, workers=workers)
    return f1_matrix(lcs, lengths[:, None], lengths)


class DiversityFilter:
    """A growing pool of texts (and vectors) that rejects candidates too similar to it."""

    def __init__(
        self,
        rouge_threshold: float = 0.85,  # SeDi's relaxed Self-Instruct threshold (the original is 0.7)
        # Cosine. 0.95 removes only near-verbatim rewordings: with MiniLM, genuine paraphrases of one task often
        # land at 0.8-0.9 (0.81 for two phrasings of 'tips for better sleep'), as do distinct tasks on one topic,
        # so a lower threshold catches more paraphrases at the cost of rejecting related but different tasks.
        embedding_threshold: float | None = 0.95,
        pool_texts: Iterable[str] = (),
        pool_ids: Iterable[int] = (),
        pool_vectors: npt.ArrayLike | None = None,
        *,
        encoder: EncodeFn | None = None,
        index_kind: IndexKind = "exact",
        workers: int = 1,
        pool_index: VectorIndex | None = None,
    ) -> None:
        """``pool_ids`` defaults to 0..n-1 and ids of later candidates to one past the largest id seen.
        ``encoder`` (e.g. an :class:`~diversity.embeddings.Encoder`) embeds whatever arrives without vectors.
        ``workers``: rapidfuzz threads for ROUGE-L. ``pool_index``: the pool's vectors already indexed (as
        :attr:`index` saved by an earlier filter over the same pool), so that nothing is embedded or re-indexed;
        it must hold exactly the pool's ids in order."""
        if embedding_threshold is not None and not -1.0 <= embedding_threshold <= 1.0:
            raise ValueError(f"embedding_threshold must lie in [-1, 1], got {embedding_threshold}")
        self.embedding_threshold = embedding_threshold
        self.encoder = encoder
        self.index_kind: IndexKind = index_kind
        self.workers = workers
        self._rouge = RougeFilter(rouge_threshold, workers=workers)
        self._ids: list[int] = []  # pool position -> id; RougeFilter's pool indices are these positions
        self._index: VectorIndex | None = None  # created on the first vectors, when their dimension is known
        self._next_id = 0
        if pool_index is None:
            self.add(list(pool_texts), pool_vectors, list(pool_ids) or None)
        else:
            self._adopt(pool_index, list(pool_texts), list(pool_ids) or None)

    def _adopt(self, index: VectorIndex, texts: list[str], ids: list[int] | None) -> None:
        if not self.uses_embeddings:
            raise ValueError("pool_index given but the embedding rule is off (embedding_threshold is None)")
        chosen = self._take_ids(len(texts), ids)
        if index.ids.tolist() != chosen:
            raise ValueError(f"pool_index holds {len(index)} vectors whose ids are not the pool's {len(chosen)} ids")
        self._index = index
        self.index_kind = index.kind
        self._rouge.add(texts)
        self._ids.extend(chosen)

    @property
    def rouge_threshold(self) -> float:
        return self._rouge.threshold

    @property
    def uses_embeddings(self) -> bool:
        return self.embedding_threshold is not None

    def __len__(self) -> int:
        """Texts in the pool (seeds plus kept candidates)."""
        return len(self._ids)

    @property
    def index(self) -> VectorIndex | None:
        """The pool's vector index (``None`` until the first vectors arrive); save it with :meth:`VectorIndex.save`."""
        return self._index

    @property
    def ids(self) -> tuple[int, ...]:
        """Pool ids in insertion order."""
        return tuple(self._ids)

    @property
    def texts(self) -> tuple[str, ...]:
        """Pool texts in insertion order."""
        return self._rouge.texts

    def add(
        self,
        texts: Sequence[str],
        vectors: npt.ArrayLike | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Put texts in the pool unchecked (seeds, or tasks kept by an earlier run); returns their ids."""
        new_ids = self._take_ids(len(texts), ids)
        if self.uses_embeddings and texts:
            matrix = self._vectors(texts, vectors)
            self._index_for(matrix.shape[1]).add(new_ids, matrix)
        self._rouge.add(texts)
        self._ids.extend(new_ids)
        return new_ids

    def check(self, text: str, vector: npt.ArrayLike | None = None, id: int | None = None) -> DiversityVerdict:
        """:meth:`check_batch` for one candidate."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.check_batch([text], vectors, None if id is None else [id])[0]

    def check_batch(
        self,
        texts: Sequence[str],
        vectors: npt.ArrayLike | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[DiversityVerdict]:
        """Decide on each candidate in order; kept ones join the pool (texts, vectors, ids).

        A candidate is rejected by ``"rouge"`` when its max ROUGE-L F1 against the pool or an earlier kept
        candidate exceeds ``rouge_threshold``, else by ``"embedding"`` when its max cosine against the same
        exceeds ``embedding_threshold``. Without ``vectors``, ``encoder`` embeds the candidates that pass
        ROUGE-L against the pool (the others are rejected whatever their vectors).
        """
        if len(texts) > _MAX_BATCH:  # in order, chunk by chunk: the same decisions, bounded n×n matrices
            id_list = None if ids is None else list(ids)
            verdicts_all: list[DiversityVerdict] = []
            for start in range(0, len(texts), _MAX_BATCH):
                stop = start + _MAX_BATCH
                part = None if vectors is None else np.asarray(vectors, dtype=np.float32)[start:stop]
                part_ids = None if id_list is None else id_list[start:stop]
                verdicts_all += self.check_batch(texts[start:stop], part, part_ids)
            return verdicts_all
        n = len(texts)
        batch_ids = self._take_ids(n, ids)
        pool_rouge = self._rouge.score_batch(texts)
        inner_rouge = _pairwise_rouge(texts, self.workers) if n > 1 else np.zeros((n, n))

        has_vector = np.zeros(n, dtype=bool)
        matrix: npt.NDArray[np.float32] | None = None
        pool_sims = np.full(n, -np.inf, dtype=np.float32)
        pool_nearest = np.full(n, -1, dtype=np.int64)
        if self.uses_embeddings and n:
            if vectors is not None:
                has_vector[:] = True
                matrix = self._vectors(texts, vectors)
            else:
                has_vector[:] = [verdict.kept for verdict in pool_rouge]
                if has_vector.any():
                    embedded = self._vectors([texts[i] for i in np.flatnonzero(has_vector).tolist()], None)
                    matrix = np.zeros((n, embedded.shape[1]), dtype=np.float32)
                    matrix[has_vector] = embedded
            if matrix is not None:
                found_ids, found_sims = self._index_for(matrix.shape[1]).search(matrix[has_vector], 1)
                pool_nearest[has_vector], pool_sims[has_vector] = found_ids[:, 0], found_sims[:, 0]
        inner_cosine = matrix @ matrix.T if matrix is not None else None

        verdicts: list[DiversityVerdict] = []
        kept_positions: list[int] = []
        for i, pool_verdict in enumerate(pool_rouge):
            rouge_score = pool_verdict.max_score
            rouge_index = pool_verdict.nearest_index
            rouge_nearest = self._ids[rouge_index] if rouge_index >= 0 else None
            if kept_positions:
                row = inner_rouge[i, kept_positions]
                j = int(np.argmax(row))
                # Pool entries win ties (they are older), as in RougeFilter; a token-less text is never nearest.
                if row[j] > rouge_score or (rouge_nearest is None and row[j] > 0):
                    rouge_score, rouge_nearest = float(row[j]), batch_ids[kept_positions[j]]
            rejected_by_rouge = rouge_score > self.rouge_threshold

            cosine: float | None = None
            cosine_nearest: int | None = None
            if has_vector[i]:
                if pool_nearest[i] >= 0:
                    cosine, cosine_nearest = float(pool_sims[i]), int(pool_nearest[i])
                assert inner_cosine is not None
                earlier = [p for p in kept_positions if has_vector[p]]
                if earlier:
                    cosines = inner_cosine[i, earlier]
                    j = int(np.argmax(cosines))
                    if cosine is None or cosines[j] > cosine:
                        cosine, cosine_nearest = float(cosines[j]), batch_ids[earlier[j]]
            rule: Rule | None = None
            if rejected_by_rouge:
                rule = "rouge"
            elif self.embedding_threshold is not None and cosine is not None and cosine > self.embedding_threshold:
                rule = "embedding"
            verdicts.append(
                DiversityVerdict(
                    id=batch_ids[i],
                    kept=rule is None,
                    rule=rule,
                    rouge_score=rouge_score,
                    rouge_nearest_id=rouge_nearest,
                    cosine=cosine,
                    embedding_nearest_id=cosine_nearest,
                )
            )
            if rule is None:
                kept_positions.append(i)

        if kept_positions:
            self._rouge.add([texts[i] for i in kept_positions])
            self._ids.extend(batch_ids[i] for i in kept_positions)
            if matrix is not None:
                assert self._index is not None
                self._index.add([batch_ids[i] for i in kept_positions], matrix[kept_positions])
        return verdicts

    def _take_ids(self, n: int, ids: Sequence[int] | None) -> list[int]:
        if ids is None:
            chosen = list(range(self._next_id, self._next_id + n))
        else:
            chosen = [int(i) for i in ids]
            if len(chosen) != n:
                raise ValueError(f"{len(chosen)} ids for {n} texts")
        if chosen:
            self._next_id = max(self._next_id, max(chosen) + 1)
        return chosen

    def _vectors(self, texts: Sequence[str], vectors: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
        if vectors is None:
            if self.encoder is None:
                raise ValueError("the embedding rule needs vectors: pass them or give the filter an encoder")
            vectors = self.encoder(texts)
        array = np.asarray(vectors, dtype=np.float32)
        dim = self._index.dim if self._index is not None else (array.shape[1] if array.ndim == 2 else 0)
        matrix = as_matrix(array, dim)
        if len(matrix) != len(texts):
            raise ValueError(f"{len(matrix)} vectors for {len(texts)} texts")
        return _normalise(matrix)  # callers may pass unnormalised vectors; cosine needs unit length

    def _index_for(self, dim: int) -> VectorIndex:
        if self._index is None:
            self._index = VectorIndex(dim, self.index_kind)
        return self._index
