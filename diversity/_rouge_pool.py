"""The pool behind :class:`diversity.rouge_filter.RougeFilter`: best ROUGE-L match per query, with exact pruning.

Pool entries are token strings from a :class:`~diversity.rouge.TokenVocabulary` (one code point per
token), kept sorted by token count. A block of queries of similar length is scored in three steps:

1. Length pruning: F1 <= 2·min(n, m)/(n+m), so only the contiguous range of entries whose token count
   lets F1 exceed the threshold is read.
2. Bag pruning: the LCS of a query and an entry is at most the number of the entry's tokens that occur
   in the query (and at most the query's length). Counting, for every entry in the range, the tokens that
   occur in any query of the block is two numpy passes over a flat array of token ids; entries whose bound
   cannot exceed the threshold for any query of the block are dropped. On T0 prompts this leaves well
   under 1% of the pairs that length pruning leaves.
3. rapidfuzz computes the exact LCS of the surviving pairs (``process.cdist``), and F1 follows from it
   with the same float expression as ``rouge_score``.

With pruning disabled, step 3 runs on every pair.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from diversity.rouge import admissible_lengths, f1_matrix

# Bounds are compared with this much slack so that float rounding never prunes a pair whose F1, as the
# float expression computes it, exceeds the threshold; the slack only costs a few exact computations.
_SLACK = 1e-9
_MAX_GROUP = 16  # queries per block: larger blocks read the pool less often but prune less (union of tokens)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _codes(encoded: str) -> npt.NDArray[np.uint32]:
    """Token ids of an encoded string (its code points), without a Python-level loop."""
    return np.frombuffer(encoded.encode("utf-32-le"), dtype=np.uint32)


class BucketedPool:
    """Encoded pool entries kept sorted by token count, as one flat array of token ids plus row offsets.

    Appends go to per-length buckets; the sorted flat view is rebuilt (by concatenating cached buckets)
    the next time queries are scored, so a block of queries reads one contiguous slice of the pool.
    """

    def __init__(self, threshold: float, *, workers: int, prune: bool) -> None:
        self.threshold = threshold
        self.workers = workers
        self.prune = prune
        self.size = 0
        self._max_code = 0  # largest token id in the pool
        self._rows: dict[int, list[str]] = {}
        self._ids: dict[int, list[int]] = {}
        self._flat_buckets: dict[int, npt.NDArray[np.uint32]] = {}
        self._marks = np.zeros(1024, dtype=np.uint8)  # token id -> 1 while a block's queries contain it
        self._dirty = True
        self._sorted_rows: list[str] = []
        self._sorted_ids: IntArray = np.zeros(0, dtype=np.int64)
        self._sorted_lengths: IntArray = np.zeros(0, dtype=np.int64)
        self._offsets: IntArray = np.zeros(1, dtype=np.int64)  # row i spans flat[offsets[i]:offsets[i + 1]]
        self._flat: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)

    def append(self, encoded: str, index: int) -> None:
        """Add one entry whose pool index is ``index``."""
        length = len(encoded)
        self._rows.setdefault(length, []).append(encoded)
        self._ids.setdefault(length, []).append(index)
        self.size += 1
        self._dirty = True
        if encoded:
            self._max_code = max(self._max_code, ord(max(encoded)))

    def best_matches(self, queries: list[str], lengths: IntArray) -> tuple[FloatArray, IntArray, npt.NDArray[np.bool_]]:
        """Per query: the best F1 over the pairs compared, the pool index reaching it (lowest on ties; -1 if
        none), and whether every pool entry was compared (so that the best F1 is the exact maximum)."""
        n = len(queries)
        best = np.zeros(n, dtype=np.float64)
        best_index = np.full(n, -1, dtype=np.int64)
        exact = np.ones(n, dtype=bool)
        # An empty query scores exactly 0 against everything: nothing to compare.
        order = [int(i) for i in np.argsort(lengths, kind="stable") if lengths[i] > 0]
        if not self.size or not order:
            return best, best_index, exact
        self._refresh()
        start = 0
        while start < len(order):
            # Group queries of similar length, so one contiguous range of rows serves the whole block.
            head = int(lengths[order[start]])
            stop = start + 1
            widest = max(head * 1.25, head + 2)
            while stop < len(order) and stop - start < _MAX_GROUP and lengths[order[stop]] <= widest:
                stop += 1
            group = np.array(order[start:stop], dtype=np.int64)
            top, top_index, complete = self._score_group([queries[i] for i in group], lengths[group])
            best[group], best_index[group], exact[group] = top, top_index, complete
            start = stop
        return best, best_index, exact

    def _refresh(self) -> None:
        """Rebuild the length-sorted flat view; only buckets that grew are re-encoded."""
        if not self._dirty:
            return
        sorted_lengths = sorted(self._rows)
        for length in sorted_lengths:
            cached = self._flat_buckets.get(length)
            if cached is None or len(cached) != length * len(self._rows[length]):
                self._flat_buckets[length] = _codes("".join(self._rows[length]))
        counts = [len(self._rows[length]) for length in sorted_lengths]
        self._sorted_rows = [row for length in sorted_lengths for row in self._rows[length]]
        self._sorted_ids = np.array([i for length in sorted_lengths for i in self._ids[length]], dtype=np.int64)
        self._sorted_lengths = np.repeat(np.array(sorted_lengths, dtype=np.int64), counts)
        self._offsets = np.concatenate([[0], np.cumsum(self._sorted_lengths)])
        self._flat = np.concatenate([self._flat_buckets[length] for length in sorted_lengths])
        self._dirty = False

    def _row_range(self, shortest: int, longest: int) -> tuple[int, int]:
        """Rows (in sorted order) whose token count lets F1 exceed the threshold for some query length."""
        if not self.prune:
            low, high = 1, np.inf
        else:
            low, _ = admissible_lengths(shortest, self.threshold)
            _, high = admissible_lengths(longest, self.threshold)
        first = int(np.searchsorted(self._sorted_lengths, low, side="left"))
        return first, max(first, int(np.searchsorted(self._sorted_lengths, high, side="right")))

    def _score_group(self, queries: list[str], lengths: IntArray) -> tuple[FloatArray, IntArray, bool]:
        first, last = self._row_range(int(lengths.min()), int(lengths.max()))
        rows = self._bag_survivors(queries, lengths, first, last) if self.prune else np.arange(first, last)
        # Entries without tokens score exactly 0 against everything, so they count as compared (never nearest).
        complete = len(rows) == self.size - len(self._rows.get(0, ()))
        if not len(rows):
            return np.zeros(len(queries)), np.full(len(queries), -1, dtype=np.int64), complete
        choices = [self._sorted_rows[row] for row in rows.tolist()]
        lcs = process.cdist(queries, choices, scorer=LCSseq.similarity, workers=self.workers)
        scores = f1_matrix(lcs, lengths[:, None], self._sorted_lengths[rows])
        ids = self._sorted_ids[rows]
        top = scores.max(axis=1)
        # Lowest pool index among ties, so the answer does not depend on the order rows are stored in.
        top_index = np.array([ids[scores[row] == top[row]].min() for row in range(len(queries))], dtype=np.int64)
        return top, top_index, complete

    def _bag_survivors(self, queries: list[str], query_lengths: IntArray, first: int, last: int) -> IntArray:
        """Rows ``first:last`` whose LCS bound (shared tokens, query length) can exceed the threshold."""
        if first == last:
            return np.zeros(0, dtype=np.int64)
        codes = np.unique(np.concatenate([_codes(q) for q in queries]))
        largest = max(self._max_code, int(codes[-1]))
        if len(self._marks) <= largest:
            self._marks = np.zeros(2 * largest + 1, dtype=np.uint8)
        self._marks[codes] = 1
        try:
            begin = int(self._offsets[first])
            shared = self._marks[self._flat[begin : self._offsets[last]]]  # 1 where a query has the token
            counts = np.add.reduceat(shared, self._offsets[first:last] - begin, dtype=np.int64)
        finally:
            self._marks[codes] = 0
        row_lengths = self._sorted_lengths[first:last]
        bound = 2 * np.minimum(counts[None, :], query_lengths[:, None]) / (query_lengths[:, None] + row_lengths)
        return np.flatnonzero((bound > self.threshold - _SLACK).any(axis=0)) + first
