"""What the filter benchmarks (``scripts/bench_rouge.py``, ``scripts/bench_filter.py``) measure against: a corpus of
candidate instructions, the candidate stream cut from it, and Stanford Alpaca's ROUGE-L filter loop as the
reference, with the bookkeeping that extrapolates its time to a whole stream.

:data:`SAMPLE_CORPUS` is the default corpus: 400 T0 prompts in ``data/`` beside it (origin and license
beside it). Larger corpora are read from any JSONL path with :func:`read_texts`. The reference loop needs the
``rouge_score`` package (a development dependency), imported only when it runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from diversity.rouge_filter import RougeFilter

SAMPLE_CORPUS = Path(__file__).resolve().parent / "data" / "t0_sample.jsonl"


def read_texts(path: Path) -> list[str]:
    """The ``text`` field of each JSON line, or ``instruction`` for task files."""
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"] if "text" in row else row["instruction"])
    return texts


def candidate_stream(corpus: list[str], limit: int) -> tuple[list[str], int]:
    """The first ``limit`` candidates, repeating the corpus with a distinguishing suffix when it is too short;
    returns them and the number of copies of the corpus used."""
    if not corpus:
        raise ValueError("empty corpus")
    out: list[str] = []
    copies = 0
    while len(out) < limit:
        copies += 1
        suffix = "" if copies == 1 else f" (variant {copies})"
        out.extend(text + suffix for text in corpus[: limit - len(out)])
    return out, copies


def reference_decisions(seeds: list[str], candidates: list[str], threshold: float, workers: int) -> Iterator[bool]:
    """Alpaca's loop, one decision (kept?) per candidate as it is made: every candidate against the whole pool
    of kept instructions with rouge_score's own LCS, through a process pool. Alpaca opens a process pool per
    candidate; one pool for the whole run only makes the reference faster."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens = [scorer._tokenizer.tokenize(text) for text in seeds]
    with Pool(workers) as processes:
        for candidate in candidates:
            tokens = scorer._tokenizer.tokenize(candidate)
            if pool_tokens:
                scores = processes.map(partial(rouge_scorer._score_lcs, tokens), pool_tokens)
                if max(score.fmeasure for score in scores) > threshold:
                    yield False
                    continue
            pool_tokens.append(tokens)
            yield True


def run_reference(seeds: list[str], candidates: list[str], threshold: float, workers: int) -> list[str]:
    """The candidates Alpaca's loop keeps."""
    decisions = reference_decisions(seeds, candidates, threshold, workers)
    return [text for text, kept in zip(candidates, decisions, strict=True) if kept]


@dataclass
class ReferencePrefix:
    """What the reference did on a prefix of the stream."""

    n: int  # candidates decided
    kept: int
    seconds: float
    pairs: int  # (candidate, pool instruction) pairs scored
    half_seconds: float  # time and pairs of the first half of the prefix
    half_pairs: int


def run_reference_prefix(
    seeds: list[str], candidates: list[str], threshold: float, workers: int, budget: float, step: int
) -> ReferencePrefix:
    """The reference on a prefix, stopping at the first multiple of ``step`` reached after ``budget`` seconds."""
    started = time.perf_counter()
    done = kept = 0
    trace: list[tuple[float, int]] = []  # after each candidate: seconds so far, pairs so far
    pairs = 0
    for decision in reference_decisions(seeds, candidates, threshold, workers):
        pairs += len(seeds) + kept  # the pool this candidate was scored against
        done += 1
        kept += decision
        trace.append((time.perf_counter() - started, pairs))
        if done % step == 0 and time.perf_counter() - started >= budget:
            break
    half_seconds, half_pairs = trace[len(trace) // 2 - 1] if len(trace) > 1 else (0.0, 0)
    return ReferencePrefix(done, kept, time.perf_counter() - started, pairs, half_seconds, half_pairs)


def reference_pairs(seeds: list[str], candidates: list[str], threshold: float, workers: int, batch: int) -> int:
    """Pairs the reference would score on the whole stream: its pool at each candidate, from our filter with
    the same (ROUGE-L-only) decisions."""
    rouge = RougeFilter(threshold, seeds, workers=workers)
    pairs = 0
    for start in range(0, len(candidates), batch):
        pool = len(rouge)  # kept candidates join after the batch; earlier kept batch members count for later ones
        for verdict in rouge.check_batch(candidates[start : start + batch]):
            pairs += pool
            pool += verdict.kept
    return pairs
