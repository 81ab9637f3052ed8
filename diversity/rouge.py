"""ROUGE-L exactly as ``rouge_score`` computes it (no stemming), with the LCS done by rapidfuzz.

Self-Instruct and Alpaca decide which generated instructions to keep with
``RougeScorer(["rougeL"], use_stemmer=False)``; the baseline must reproduce those decisions, so this module
matches that package's tokenizer and its floating-point F1 expression bit for bit, and only replaces the
quadratic pure-Python LCS table with rapidfuzz's bit-parallel C++ LCS.

How tokens reach rapidfuzz: every distinct token is mapped to one Unicode code point, so a token list
becomes a string whose LCS (over characters) equals the LCS over tokens. rapidfuzz would also accept
lists of tokens, but it compares non-character elements by their Python hash, which could collide; a
code-point vocabulary is collision-free by construction and lets rapidfuzz read strings without copying.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from rapidfuzz.distance import LCSseq

__all__ = [
    "MAX_VOCABULARY",
    "TokenVocabulary",
    "admissible_lengths",
    "f1_from_lcs",
    "f1_matrix",
    "lcs_length",
    "rouge_l_f1",
    "tokenize",
]

# rouge_score lower-cases, turns every run of characters outside [a-z0-9] into a space, splits on
# whitespace and keeps only tokens matching ^[a-z0-9]+$. The surviving tokens are exactly the maximal
# [a-z0-9] runs of the lower-cased text, which one findall yields directly.
_TOKEN_RUN = re.compile(r"[a-z0-9]+")

_SURROGATES = range(0xD800, 0xE000)  # code points that cannot be encoded to UTF-32, so never handed out
MAX_VOCABULARY = 0x110000 - len(_SURROGATES)
"""Distinct tokens a :class:`TokenVocabulary` can hold: one per Unicode code point outside the surrogates."""


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` as ``rouge_score``'s default tokenizer without stemming produces them.

    ``str.lower`` runs first, as there, so characters whose lower case is ASCII (e.g. the Kelvin sign
    U+212A becomes ``k``) count as letters, and all other non-ASCII characters separate tokens.
    """
    return _TOKEN_RUN.findall(text.lower())


def f1_from_lcs(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F1 from an LCS length and the two token counts, as the same float expression.

    ``rouge_score`` computes precision = lcs/len(prediction), recall = lcs/len(target) and
    F = 2·P·R/(P+R). Repeating those exact operations (rather than the algebraically equal
    2·lcs/(len_a+len_b)) keeps results identical to the last bit, which matters for scores that sit on
    the threshold. The expression is symmetric in float arithmetic too, so argument order is free.
    """
    if len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def f1_matrix(
    lcs: npt.NDArray[np.integer], len_a: npt.NDArray[np.integer], len_b: npt.NDArray[np.integer]
) -> npt.NDArray[np.float64]:
    """Vectorised :func:`f1_from_lcs`: the same IEEE operations in the same order, so equal bit for bit.

    ``len_a`` broadcasts over rows (shape ``(n, 1)``) and ``len_b`` over columns (shape ``(m,)``).
    """
    a = len_a.astype(np.float64)
    b = len_b.astype(np.float64)
    lcs_f = lcs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs_f / b
        recall = lcs_f / a
        total = precision + recall
        scores = 2 * precision * recall / total
    # Empty token lists give 0/0 above; rouge_score returns 0 for them and for a zero LCS.
    return np.where((total > 0) & (a > 0) & (b > 0), scores, 0.0)


def admissible_lengths(len_a: int, threshold: float) -> tuple[int, float]:
    """Range ``[low, high]`` of token counts ``len_b`` for which F1 against ``len_a`` tokens can exceed ``threshold``.

    Since LCS <= min(len_a, len_b), F1 <= 2·min/(len_a+len_b); outside the returned range that bound
    cannot exceed the threshold, so those pairs need no LCS. The range is widened by one on each side so
    that rounding in the float expression can never make a pruned pair a rejection (the widening costs
    a few extra exact computations, never a wrong decision). ``high`` is ``inf`` for a zero threshold.
    """
    if len_a == 0:
        return 1, 0.0  # empty range: an empty text scores 0 against everything
    low = max(1, math.floor(threshold * len_a / (2 - threshold)) - 1)
    high = math.inf if threshold <= 0 else math.ceil(len_a * (2 - threshold) / threshold) + 1
    return low, high


class TokenVocabulary:
    """Maps each distinct token to its own code point, so token lists become strings for rapidfuzz.

    Code points are handed out in order of first appearance, skipping the surrogate range so that every
    encoded string also converts to a numpy array of token ids (via UTF-32).
    """

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._codes)

    def encode(self, tokens: Iterable[str]) -> str:
        """The string whose i-th character stands for the i-th token."""
        codes = self._codes
        out = []
        for token in tokens:
            code = codes.get(token)
            if code is None:
                if len(codes) >= MAX_VOCABULARY:
                    raise OverflowError(f"more than {MAX_VOCABULARY} distinct tokens; cannot encode exactly")
                number = len(codes)
                code = codes[token] = chr(number if number < _SURROGATES.start else number + len(_SURROGATES))
            out.append(code)
        return "".join(out)


def lcs_length(tokens_a: Sequence[str], tokens_b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (rapidfuzz, exact)."""
    if not tokens_a or not tokens_b:
        return 0
    distinct = set(tokens_a)
    distinct.update(tokens_b)
    if len(distinct) > MAX_VOCABULARY:
        # More distinct tokens than code points (texts of many megabytes): integers are compared by value.
        ids = {token: i for i, token in enumerate(distinct)}
        return int(LCSseq.similarity([ids[t] for t in tokens_a], [ids[t] for t in tokens_b]))
    vocabulary = TokenVocabulary()
    return int(LCSseq.similarity(vocabulary.encode(tokens_a), vocabulary.encode(tokens_b)))


def rouge_l_f1(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts, equal to ``RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure``."""
    tokens_a = tokenize(a)
    tokens_b = tokenize(b)
    return f1_from_lcs(lcs_length(tokens_a, tokens_b), len(tokens_a), len(tokens_b))
