"""Benchmark the full diversity filter (ROUGE-L + MiniLM embeddings) against Alpaca's ROUGE-L loop.

Usage::

    python scripts/bench_filter.py --limit 52000                       # one JSON line
    python scripts/bench_filter.py --limit 2000 --reference-seconds 10
    python scripts/bench_filter.py --corpus PATH/t0_prompts_dev.jsonl --limit 52000

``--corpus`` defaults to the 400 T0 prompts shipped in ``diversity/data`` (``diversity.benchmark.SAMPLE_CORPUS``);
the README's figures were measured on the whole T0 prompt corpus (27,337 prompts, same format), passed with
``--corpus``.

Ours: candidates arrive in batches of ``--batch`` (a generation round) and go through
:class:`diversity.dedup.DiversityFilter` (ROUGE-L > 0.85, then cosine > 0.95), which embeds with the bundled
MiniLM only the candidates that pass ROUGE-L against the pool. ``seconds`` covers embedding the seed pool and
filtering the whole stream, embedding included; loading the model is reported apart (``load_seconds``).

Reference: Alpaca's loop (see ``diversity.benchmark.reference_decisions``) runs first on the same stream, until
about ``--reference-seconds`` have passed; ``reference_n`` is the prefix it finished (a multiple of
``--batch``). ``speedup_at_reference_n`` is its time over ours on that same prefix, measured inside our run
(embedding included); ``speedup_at_reference_n_without_embedding`` leaves our embedding time out, which is
the like-for-like comparison of the similarity search itself (the reference has no embedding rule).

Extrapolation to the whole stream (``reference_seconds_extrapolated``, ``speedup_extrapolated_at_n``): the
reference scores every candidate against every instruction in its pool, so its time is its seconds per
scored pair times the number of pairs. The seconds per pair are measured on the prefix it finished (and
reported for each half of it, so that one can see they stay flat as the pool grows); the pairs it would score
on the whole stream are counted exactly by running our ROUGE-L-only filter, whose decisions are identical to
the reference's (``scripts/bench_rouge.py`` checks that), over the stream (not timed as ours). Process-pool
overhead per candidate is folded into the per-pair figure, which makes the extrapolation conservative once
pools are larger than on the prefix.

When ``--limit`` exceeds the corpus, it is repeated with the suffix `` (variant k)`` on the k-th copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diversity.benchmark import (
    SAMPLE_CORPUS,
    ReferencePrefix,
    candidate_stream,
    read_texts,
    reference_pairs,
    run_reference_prefix,
)
from diversity.dedup import DiversityFilter
from diversity.embeddings import Encoder
from sedi.tasks import bundled_path

# Before the encoder first loads transformers (nothing imported above does).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class TimedEncoder:
    """Wraps an encoder to add up the seconds spent embedding."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.seconds = 0.0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.encoder.encode(texts)
        finally:
            self.seconds += time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=SAMPLE_CORPUS,
        help="JSONL with `text` or `instruction` (default: the 400 T0 prompts shipped in diversity/data)",
    )
    parser.add_argument("--limit", type=int, default=52000, help="number of candidates to stream")
    parser.add_argument("--batch", type=int, default=20, help="candidates per check_batch call")
    parser.add_argument("--reference-seconds", type=float, default=60.0, help="time budget of the reference")
    parser.add_argument("--rouge-threshold", type=float, default=0.85)
    parser.add_argument("--embedding-threshold", type=float, default=0.95)
    parser.add_argument(
        "--seeds", type=str, default=str(bundled_path("seed_tasks.jsonl")), help="initial pool (JSONL); '' for none"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (reference) and threads (ROUGE-L)")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto", help="encoder")
    args = parser.parse_args(argv)

    seeds = read_texts(Path(args.seeds)) if args.seeds else []
    candidates, copies = candidate_stream(read_texts(args.corpus), args.limit)
    result: dict[str, object] = {"n": len(candidates), "batch": args.batch, "seeds": len(seeds), "repeated": copies}

    reference = ReferencePrefix(0, 0, 0.0, 0, 0.0, 0)
    if args.reference_seconds > 0:
        reference = run_reference_prefix(
            seeds, candidates, args.rouge_threshold, args.workers, args.reference_seconds, args.batch
        )
    reference_n, reference_seconds = reference.n, reference.seconds

    started = time.perf_counter()
    encoder = TimedEncoder(Encoder(device="cpu", precision=args.precision))
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    dedup = DiversityFilter(
        args.rouge_threshold, args.embedding_threshold, pool_texts=seeds, encoder=encoder, workers=args.workers
    )
    kept = by_embedding = 0
    prefix_seconds = prefix_embed_seconds = 0.0
    prefix_kept = 0
    for start in range(0, len(candidates), args.batch):
        for verdict in dedup.check_batch(candidates[start : start + args.batch]):
            kept += verdict.kept
            by_embedding += verdict.rule == "embedding"
        if start + args.batch == reference_n:
            prefix_seconds = time.perf_counter() - started
            prefix_embed_seconds, prefix_kept = encoder.seconds, kept
    seconds = time.perf_counter() - started

    extrapolated: float | None = None
    if reference.pairs:
        per_pair = reference.seconds / reference.pairs
        extrapolated = per_pair * reference_pairs(seeds, candidates, args.rouge_threshold, args.workers, args.batch)
        result.update(
            reference_us_per_pair=round(1e6 * per_pair, 3),
            reference_us_per_pair_first_half=round(1e6 * reference.half_seconds / max(reference.half_pairs, 1), 3),
            reference_us_per_pair_second_half=round(
                1e6 * (reference.seconds - reference.half_seconds) / max(reference.pairs - reference.half_pairs, 1), 3
            ),
        )

    result.update(
        kept=kept,
        seconds=round(seconds, 2),
        embed_seconds=round(encoder.seconds, 2),
        embedded=encoder.encoder.encoded_count,
        precision=encoder.encoder.precision,
        load_seconds=round(load_seconds, 2),
        removed_by_embedding_beyond_rouge=by_embedding,
        reference_n=reference_n,
        reference_seconds=round(reference_seconds, 2),
        reference_kept=reference.kept,
        reference_seconds_extrapolated=None if extrapolated is None else round(extrapolated, 1),
        speedup_extrapolated_at_n=None if extrapolated is None else round(extrapolated / seconds, 1),
        ours_seconds_at_reference_n=round(prefix_seconds, 3),
        ours_kept_at_reference_n=prefix_kept,
        speedup_at_reference_n=round(reference_seconds / prefix_seconds, 1) if prefix_seconds else None,
        speedup_at_reference_n_without_embedding=(
            round(reference_seconds / (prefix_seconds - prefix_embed_seconds), 1)
            if prefix_seconds > prefix_embed_seconds
            else None
        ),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        cpu_count=os.cpu_count(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
