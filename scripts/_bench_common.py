"""Helpers shared by the benchmark scripts: corpus reading, the candidate stream, and Alpaca's reference filter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "t0_prompts_dev.jsonl"
DEFAULT_SEEDS = REPO / "sedi" / "data" / "seed_tasks.jsonl"


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
    """The first ``limit`` candidates, repeating the corpus with a distinguishing suffix when it is too short."""
    if not corpus:
        raise SystemExit("empty corpus")
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
