"""Self-Instruct's and Alpaca's heuristic filters for generated instructions, with a name for every rule.

Both reference generators apply the same checks, in this order, to each parsed instruction: word count
(``len(text.split())`` <= 3 or > 150), a keyword blacklist, the prefix "Write a program", a leading ASCII
punctuation character, a leading non-ASCII character.
Keywords are matched as ``\\b<keyword>\\b`` regular expressions with ``re.IGNORECASE`` on the instruction
itself, so "Map" and "map's" match ``map`` while "Mapping", "profile" and "file_name" do not (``_`` is a
word character), and Python's Unicode word boundaries apply ("éfile" does not match ``file``).

The references strip the instruction first (Self-Instruct also collapses whitespace runs to one space and
capitalises the first letter while parsing); :func:`first_failed_rule` strips, and leaves the rest to the
parser, so "go  to" with two spaces only matches ``go to`` once the parser has collapsed it.

Rejecting a whole response that the length limit cut off is the generator's concern (it needs the
finish reason), not this module's.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ALPACA_EXTRA_KEYWORDS",
    "ALPACA_RULES",
    "SELF_INSTRUCT_KEYWORDS",
    "SELF_INSTRUCT_RULES",
    "HeuristicRules",
    "first_failed_rule",
    "rule_names",
]

SELF_INSTRUCT_KEYWORDS: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)
"""Tasks a text-only model cannot do (Self-Instruct's blacklist)."""

ALPACA_EXTRA_KEYWORDS: tuple[str, ...] = ("video", "audio", "music", "flowchart", "diagram")
"""What Stanford Alpaca adds to the blacklist."""


@dataclass(frozen=True)
class HeuristicRules:
    """Which heuristic filters apply; the defaults are Self-Instruct's.

    ``too_short_words``: reject when the instruction has at most this many whitespace-separated words.
    ``max_words``: reject when it has more. ``keywords``: reject when one occurs as a whole word or phrase
    (case-insensitive). ``banned_prefixes``: reject when the instruction starts with one (case-sensitive,
    as in the references). The last two flags reject a first character in ``string.punctuation`` or
    outside ASCII.
    """

    too_short_words: int = 3
    max_words: int = 150
    keywords: tuple[str, ...] = SELF_INSTRUCT_KEYWORDS
    banned_prefixes: tuple[str, ...] = ("Write a program",)
    reject_leading_punctuation: bool = True
    reject_non_ascii_start: bool = True


SELF_INSTRUCT_RULES = HeuristicRules()
ALPACA_RULES = HeuristicRules(keywords=SELF_INSTRUCT_KEYWORDS + ALPACA_EXTRA_KEYWORDS)


@lru_cache(maxsize=64)
def _keyword_patterns(keywords: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One compiled pattern per keyword, in list order, so the reported keyword is the first that matches.

    ``re.escape`` only matters for keywords with regex metacharacters (none in the references' lists),
    which the references would have interpreted as patterns; here they are matched literally.
    """
    return tuple((keyword, re.compile(rf"\b{re.escape(keyword)}\b", re.IGNORECASE)) for keyword in keywords)


def _slug(prefix: str) -> str:
    """Stable rule name for a banned prefix: "Write a program" -> "write_a_program"."""
    return re.sub(r"[^a-z0-9]+", "_", prefix.lower()).strip("_")


def rule_names(rules: HeuristicRules = SELF_INSTRUCT_RULES) -> list[str]:
    """Every name :func:`first_failed_rule` can return under ``rules``, in the order the checks run."""
    names = ["too_short", "too_long", *(f"keyword:{keyword}" for keyword in rules.keywords)]
    names += [_slug(prefix) for prefix in rules.banned_prefixes]
    if rules.reject_leading_punctuation:
        names.append("leading_punctuation")
    if rules.reject_non_ascii_start:
        names.append("non_ascii_start")
    return names


def first_failed_rule(instruction: str, rules: HeuristicRules = SELF_INSTRUCT_RULES) -> str | None:
    """Name of the first heuristic that rejects ``instruction`` (checks in the references' order), or None.

    Surrounding whitespace is ignored, as both references strip instructions before these checks.
    Names: ``too_short``, ``too_long``, ``keyword:<keyword>``, the banned prefix as a slug (default
    ``write_a_program``), ``leading_punctuation``, ``non_ascii_start``.
    """
    text = instruction.strip()
    words = len(text.split())
    if words <= rules.too_short_words:
        return "too_short"
    if words > rules.max_words:
        return "too_long"
    for keyword, pattern in _keyword_patterns(rules.keywords):
        if pattern.search(text):
            return f"keyword:{keyword}"
    for prefix in rules.banned_prefixes:
        if text.startswith(prefix):
            return _slug(prefix)
    if not text:  # only reachable with too_short_words < 0
        return None
    if rules.reject_leading_punctuation and text[0] in string.punctuation:
        return "leading_punctuation"
    if rules.reject_non_ascii_start and not text[0].isascii():
        return "non_ascii_start"
    return None
