"""ROUGE-L and the similarity filter agree with the ``rouge_score`` package, on real instructions and edge cases.

The reference throughout is ``rouge_score`` itself (no stemming): ``RougeScorer.score`` for single pairs and,
for filter decisions, Stanford Alpaca's loop (pre-tokenized pool, ``rouge_scorer._score_lcs`` against every
kept instruction, reject when the max exceeds the threshold).
"""

from __future__ import annotations

import json
import multiprocessing
import random
from functools import cache, partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from benchmarks.filter_reference import SAMPLE_CORPUS
from diversity import rouge
from diversity.rouge import TokenVocabulary, admissible_lengths, f1_from_lcs, lcs_length, rouge_l_f1, tokenize
from diversity.rouge_filter import RougeFilter

REPO = Path(__file__).resolve().parent.parent
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference(a: str, b: str) -> float:
    return float(SCORER.score(a, b)["rougeL"].fmeasure)


def _read(path: Path, field: str) -> list[str]:
    return [json.loads(line)[field] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@cache
def seeds() -> list[str]:
    return _read(REPO / "sedi" / "data" / "seed_tasks.jsonl", "instruction")


@cache
def heldout() -> list[str]:
    return _read(REPO / "sedi" / "data" / "user_oriented_instructions.jsonl", "instruction")


@cache
def t0_sample() -> list[str]:
    return _read(SAMPLE_CORPUS, "text")


EDGE_CASES = [
    "",
    " ",
    "!!!",
    "?.,;:",
    "a",
    "A",
    "Hello, World!",
    "hello world",
    "hello-world_again",
    "café naïve résumé",
    "cafe naive resume",
    "\u212a is the Kelvin sign",
    "k is the kelvin sign",
    "\u0130stanbul",
    "i stanbul",
    "日本語のテキスト and text",
    "emoji 😀 in 😀 text",
    "tabs\tand\nnewlines\r\n",
    "v2.0 costs $3.14 (approx.)",
    "the the the the",
    "the",
    "ﬁle ligature",
    "Ǆ digraph",
    "x" * 500,
    " ".join(["word"] * 300),
    " ".join(f"w{i % 97}" for i in range(700)),
    " ".join(f"w{i % 89}" for i in range(650)),
]


def test_t0_sample_is_the_documented_sample() -> None:
    assert len(t0_sample()) == 400
    assert all(t0_sample())


def test_tokenize_matches_rouge_score() -> None:
    texts = seeds() + heldout() + t0_sample() + EDGE_CASES
    mismatched = [t for t in texts if tokenize(t) != SCORER._tokenizer.tokenize(t)]
    assert mismatched == []
    assert tokenize("\u212a9, İx") == ["k9", "i", "x"]  # lower() happens before the [a-z0-9] split, as there


def _real_pairs() -> list[tuple[str, str]]:
    s, h, t = seeds(), heldout(), t0_sample()
    pairs = [(s[i], s[j]) for i in range(len(s)) for j in range(i + 1, len(s))]
    pairs += [(h[i], s[(7 * i + k) % len(s)]) for i in range(len(h)) for k in range(8)]
    pairs += [(h[i], h[(i + k) % len(h)]) for i in range(len(h)) for k in (1, 2)]
    pairs += [(t[i], t[i + 1]) for i in range(len(t) - 1)] + [(t[i], h[i % len(h)]) for i in range(len(t))]
    return pairs


@pytest.mark.slow
def test_f1_equals_reference_bit_for_bit_on_real_pairs() -> None:
    pairs = _real_pairs()
    assert len(pairs) > 15_000
    ours = [rouge_l_f1(a, b) for a, b in pairs]
    mismatched = [(a, b, o, reference(a, b)) for (a, b), o in zip(pairs, ours, strict=True) if o != reference(a, b)]
    assert mismatched == []
    assert sum(o > 0.5 for o in ours) > 100  # the sample includes near-duplicates, not only unrelated pairs
    assert all(rouge_l_f1(b, a) == o for (a, b), o in zip(pairs[::50], ours[::50], strict=True))


def test_the_two_seed_pairs_above_0_7() -> None:
    s = seeds()
    above = {(i, j): rouge_l_f1(s[i], s[j]) for i in range(len(s)) for j in range(i + 1, len(s))}
    above = {pair: score for pair, score in above.items() if score > 0.7}
    assert sorted((s[i], s[j]) for i, j in above) == [
        (
            "Use a counterstereotype to complete the given sentence.",
            "Use a positive stereotype to complete the sentence.",
        ),
        ("Write a conversation based on the given facts.", "Write a cover letter based on the given facts."),
    ]
    for (i, j), score in above.items():
        assert score == reference(s[i], s[j])
    assert sorted(above.values()) == pytest.approx([0.75, 14 / 17], abs=1e-12)

    # Streaming the seeds through the baseline filter rejects exactly the later member of each pair.
    verdicts = RougeFilter(0.7).check_batch(s)
    rejected = {s[k]: v for k, v in enumerate(verdicts) if not v.kept}
    assert {text: v.nearest_text for text, v in rejected.items()} == {
        "Write a cover letter based on the given facts.": "Write a conversation based on the given facts.",
        "Use a positive stereotype to complete the sentence.": "Use a counterstereotype to complete the given sentence.",  # noqa: E501
    }
    for text, verdict in rejected.items():
        assert verdict.max_is_exact and verdict.nearest_text is not None
        assert verdict.max_score == reference(text, verdict.nearest_text) > 0.7


@pytest.mark.parametrize("a", EDGE_CASES)
def test_edge_cases_match_reference(a: str) -> None:
    for b in EDGE_CASES:
        assert rouge_l_f1(a, b) == reference(a, b), (a, b)
    assert rouge_l_f1(a, a) == (1.0 if tokenize(a) else 0.0)


_SMALL_ALPHABET = st.sampled_from(list("ab c1.,!?\n\t-_ÉéßİK日😀"))


@settings(max_examples=400, deadline=None)
@given(st.text(_SMALL_ALPHABET, max_size=60), st.text(_SMALL_ALPHABET, max_size=60))
def test_property_small_alphabet_matches_reference(a: str, b: str) -> None:
    assert rouge_l_f1(a, b) == reference(a, b)
    assert tokenize(a) == SCORER._tokenizer.tokenize(a)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_property_any_unicode_matches_reference(a: str, b: str) -> None:
    assert rouge_l_f1(a, b) == reference(a, b)


def test_lcs_falls_back_to_integers_beyond_the_code_point_space(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = "one two three four five two", "two four six five one two"
    expected = rouge_scorer._lcs_table(tokenize(a), tokenize(b))[-1][-1]
    monkeypatch.setattr(rouge, "MAX_VOCABULARY", 3)
    assert lcs_length(tokenize(a), tokenize(b)) == expected == 4
    with pytest.raises(OverflowError):
        TokenVocabulary().encode(["p", "q", "r", "s"])


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0])
def test_length_pruning_never_hides_a_pair_above_the_threshold(threshold: float) -> None:
    for len_a in range(1, 160):
        low, high = admissible_lengths(len_a, threshold)
        for len_b in range(1, 400):
            if not low <= len_b <= high:  # the best conceivable score, as the float expression computes it
                assert not f1_from_lcs(min(len_a, len_b), len_a, len_b) > threshold, (len_a, len_b)


# --- the filter -----------------------------------------------------------------------------------------


def _candidate_stream() -> list[str]:
    """~1,500 real candidates: held-out tasks, T0 prompts, the seeds again, and word-dropped near-duplicates.

    Only half of the T0 sample goes in: its prompts are long, which makes the reference loop slow.
    """
    base = heldout() + seeds()
    dropped_one = [
        " ".join(w for k, w in enumerate(t.split()) if k != i % max(1, len(t.split()))) for i, t in enumerate(base)
    ]
    dropped_third = [" ".join(w for k, w in enumerate(t.split()) if k % 3 != 1) for t in base]
    stream = heldout() + t0_sample()[:200] + seeds() + dropped_one + dropped_third
    random.Random(0).shuffle(stream)
    return stream


_MEMO: dict[tuple[int, int], float] = {}  # reference scores, shared by both thresholds (the same pairs recur)


@cache
def _reference_decisions(threshold: float) -> tuple[list[tuple[bool, float]], list[str]]:
    """Alpaca's filter: each candidate against every kept instruction; (kept, max score) per candidate.

    As in Alpaca, the pool's pre-tokenized instructions are scored with ``rouge_scorer._score_lcs`` through a
    process pool (two processes here, started with "spawn" so that no state of the test process is forked).
    """
    pool, stream = seeds(), _candidate_stream()
    tokens = {j: SCORER._tokenizer.tokenize(t) for j, t in enumerate(stream)}
    tokens.update({j - len(pool): SCORER._tokenizer.tokenize(t) for j, t in enumerate(pool)})
    kept_ids = list(range(-len(pool), 0))  # negative ids: the initial pool
    decisions = []
    with multiprocessing.get_context("spawn").Pool(2) as processes:
        for i in range(len(stream)):
            missing = [j for j in kept_ids if (i, j) not in _MEMO]
            scores = processes.map(partial(rouge_scorer._score_lcs, tokens[i]), [tokens[j] for j in missing])
            _MEMO.update({(i, j): score.fmeasure for j, score in zip(missing, scores, strict=True)})
            best = max((_MEMO[(i, j)] for j in kept_ids), default=0.0)
            decisions.append((not best > threshold, best))
            if not best > threshold:
                kept_ids.append(i)
    return decisions, stream


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.7, 0.85])
@pytest.mark.parametrize("batch_sizes", [(1,), (7, 64, 200), (2000,)])
def test_filter_decisions_identical_to_reference(threshold: float, batch_sizes: tuple[int, ...]) -> None:
    expected, stream = _reference_decisions(threshold)
    assert len(stream) > 1_450
    kept_count = sum(k for k, _ in expected)
    assert 0.15 * len(stream) < kept_count < 0.9 * len(stream)  # both outcomes are well represented
    rouge_filter = RougeFilter(threshold, seeds(), workers=2 if len(batch_sizes) > 1 else 1, chunk_size=128)
    verdicts, start, k = [], 0, 0
    while start < len(stream):
        size = batch_sizes[k % len(batch_sizes)]
        verdicts += rouge_filter.check_batch(stream[start : start + size])
        start, k = start + size, k + 1
    assert [v.kept for v in verdicts] == [kept for kept, _ in expected]
    assert len(rouge_filter) == len(seeds()) + kept_count
    for text, verdict, (_, best) in zip(stream, verdicts, expected, strict=True):
        if verdict.max_is_exact:
            assert verdict.max_score == best
        else:
            assert verdict.kept and verdict.max_score <= best <= threshold
        if verdict.nearest_text is not None:
            assert reference(text, verdict.nearest_text) == verdict.max_score
            assert rouge_filter.texts[verdict.nearest_index] == verdict.nearest_text


@pytest.mark.slow
def test_unpruned_filter_reports_every_max_exactly() -> None:
    expected, stream = _reference_decisions(0.85)
    verdicts = RougeFilter(0.85, seeds(), prune=False).check_batch(stream[:400])
    assert all(v.max_is_exact for v in verdicts)
    assert [(v.kept, v.max_score) for v in verdicts] == expected[:400]


def test_rebuilt_filter_continues_like_the_original() -> None:
    stream = _candidate_stream()[:600]
    whole = RougeFilter(0.7, seeds())
    first = whole.check_batch(stream[:300])
    rebuilt = RougeFilter(0.7, list(whole.texts))
    assert len(rebuilt) == len(whole) == len(seeds()) + sum(v.kept for v in first)
    assert rebuilt.check_batch(stream[300:]) == whole.check_batch(stream[300:])
    rebuilt.reset(seeds())
    assert len(rebuilt) == len(seeds()) and rebuilt.texts == tuple(seeds())


def test_filter_edge_cases() -> None:
    rouge_filter = RougeFilter(0.7)
    first = rouge_filter.check("")  # empty pool, empty candidate
    assert first.kept and first.max_score == 0.0 and first.nearest_index == -1 and first.max_is_exact
    verdicts = rouge_filter.check_batch(
        ["Summarize the article.", "Summarize the article!", "...", "summarize article"]
    )
    assert [v.kept for v in verdicts] == [True, False, True, False]
    assert verdicts[1].max_score == 1.0 and verdicts[1].nearest_text == "Summarize the article."
    assert verdicts[3].max_score == reference("summarize article", "Summarize the article.") == pytest.approx(0.8)
    assert verdicts[3].nearest_index == 1  # pool: "", "Summarize the article.", "..."
    with pytest.raises(ValueError):
        RougeFilter(1.5)


def test_filter_vocabulary_beyond_the_surrogate_code_points() -> None:
    # 60,000 distinct tokens: token ids run past U+D7FF, where the vocabulary skips the surrogate range.
    texts = [" ".join(f"w{50 * i + k}" for k in range(50)) for i in range(1200)]
    rouge_filter = RougeFilter(0.85, texts)
    near = " ".join(texts[-1].split()[:40])
    verdict = rouge_filter.check(near)
    assert not verdict.kept and verdict.nearest_index == 1199
    assert verdict.max_score == reference(near, texts[-1]) == pytest.approx(80 / 90, abs=1e-12)


@pytest.mark.parametrize(("threshold", "size", "common"), [(0.7, 10, 7), (0.85, 20, 17)])
def test_a_score_equal_to_the_threshold_is_kept(threshold: float, size: int, common: int) -> None:
    pool = " ".join(f"t{i}" for i in range(size))
    tie = " ".join([f"t{i}" for i in range(common)] + [f"u{i}" for i in range(size - common)])
    above = " ".join([f"t{i}" for i in range(common + 1)] + [f"v{i}" for i in range(size - common - 1)])
    assert reference(pool, tie) == threshold  # the float expression lands exactly on the threshold
    verdicts = RougeFilter(threshold, [pool]).check_batch([tie, above])
    assert [v.kept for v in verdicts] == [True, False]  # Self-Instruct rejects only max > threshold
    assert verdicts[0].max_score == threshold and verdicts[1].max_score == reference(pool, above)
