"""Benchmark the full diversity filter (ROUGE-L + MiniLM embeddings) against Alpaca's ROUGE-L loop.

Usage::

    python scripts/bench_filter.py --limit 52000                       # one JSON line
    python scripts/bench_filter.py --limit 2000 --reference-seconds 10
    python scripts/bench_filter.py --corpus PATH/t0_prompts_dev.jsonl --limit 52000

``--corpus`` defaults to the 400 T0 prompts in ``scripts/benchmarks/data``
(``benchmarks.filter_reference.SAMPLE_CORPUS``);
the figures in docs/results.md were measured on the whole T0 prompt corpus (27,337 prompts, same format), passed with
``--corpus``.

Ours: candidates arrive in batches of ``--batch`` (a generation round) and go through
:class:`diversity.dedup.DiversityFilter` (ROUGE-L > 0.85, then cosine > 0.95), which embeds with the bundled
MiniLM only the candidates that pass ROUGE-L against the pool. ``seconds`` covers embedding the seed pool and
filtering the whole stream, embedding included; loading the model is reported apart (``load_seconds``).

Reference: Alpaca's loop (see ``benchmarks.filter_reference.reference_decisions``) runs first on the same stream, until
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

Scale mode (``--limit`` above ``--real-max``, 100,000 by default; e.g. ``--limit 1000000 --index ivf``): there are
only ~27K real T0 prompts, and embedding a million texts on a 2-core CPU takes hours, so this mode says
what is real and what is derived. Real: ``--embed-sample`` corpus texts are embedded with the filter's encoder
(``embed_seconds``, ``embed_ms_per_text``, ``embed_cpu_ms_per_text``); ``embed_seconds_projected`` is that rate
times ``--limit``. Derived: the index is driven at ``--limit`` with vectors derived from those real embeddings
(``benchmarks.scale.derived_vectors``: real vector plus noise of a per-vector scale, so near-duplicates and
borderline pairs occur), through the embedding rule exactly as the filter applies it (``seconds``, measured, split
into ``search_seconds``/``add_seconds``/``decide_seconds``). ``agreement_with_exact``: share of embedding-rule
decisions identical to exact search's on the first ``--agreement-prefix`` candidates of the same stream.
ROUGE-L is not run (derived vectors have no text). ``peak_rss_mb`` is the whole process's.
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

from benchmarks.filter_reference import (
    SAMPLE_CORPUS,
    ReferencePrefix,
    candidate_stream,
    read_texts,
    reference_pairs,
    run_reference_prefix,
)
from benchmarks.scale import derived_vectors, embedding_rule, exact_rule
from diversity.dedup import DiversityFilter
from diversity.embeddings import Encoder
from diversity.index import VectorIndex

# Before the encoder first loads transformers (nothing imported above does).
from sedi.base.hardware import go_offline
from sedi.config.seeds import bundled_path

go_offline()  # before transformers is imported


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
        help="JSONL with `text` or `instruction` (default: the 400 T0 prompts in scripts/benchmarks/data)",
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
    parser.add_argument("--backend", choices=["auto", "torch", "openvino"], default="auto", help="encoder backend")
    parser.add_argument("--backend-check", type=int, default=1000, help="texts compared with float32 torch")
    parser.add_argument("--index", choices=["auto", "exact", "ivf", "hnsw"], default="auto", help="FAISS index kind")
    parser.add_argument("--real-max", type=int, default=100_000, help="above this --limit, run the scale mode")
    parser.add_argument("--embed-sample", type=int, default=2000, help="scale mode: real texts embedded")
    parser.add_argument("--agreement-prefix", type=int, default=100_000, help="scale mode: exact reference size")
    args = parser.parse_args(argv)
    if args.limit > args.real_max:
        scale_main(args)
        return

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
    encoder = TimedEncoder(Encoder(device="cpu", precision=args.precision, backend=args.backend))
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    dedup = DiversityFilter(
        args.rouge_threshold,
        args.embedding_threshold,
        pool_texts=seeds,
        encoder=encoder,
        workers=args.workers,
        index_kind=args.index,
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
        embed_ms_per_text=round(1000 * encoder.seconds / max(encoder.encoder.encoded_count, 1), 2),
        precision=encoder.encoder.precision,
        backend=encoder.encoder.backend,
        **backend_agreement(candidates[: args.backend_check], encoder.encoder, args.embedding_threshold),
        index=args.index,
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
        peak_rss_mb=peak_rss_mb(),
        cpu_count=os.cpu_count(),
    )
    print(json.dumps(result))


def backend_agreement(texts: list[str], encoder: Encoder, threshold: float) -> dict[str, object]:
    """How far the encoder under test is from float32 torch on ``texts``: the embedding rule's decisions over them
    (in order, exact search) with each set of vectors, and the lowest cosine between a text's two vectors."""
    if (encoder.backend == "torch" and encoder.precision == "float32") or not texts:
        return {"backend_agreement": 1.0, "backend_checked": len(texts)}
    ours = encoder.encode(texts)  # answered from the run's cache when the run embedded them already
    reference = Encoder(encoder.model_name, device="cpu", precision="float32", backend="torch").encode(texts)
    expected = exact_rule(iter([reference]), threshold)
    same = exact_rule(iter([ours]), threshold) == expected
    return {
        "backend_agreement": round(float(same.mean()), 5),
        "backend_checked": len(texts),
        "backend_rejected_by_reference": int(expected.sum()),
        "backend_min_cosine": round(float((ours * reference).sum(axis=1).min()), 6),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale_main(args: argparse.Namespace) -> None:
    """The index at ``--limit`` candidates on vectors derived from real embeddings (see the module docstring)."""
    corpus = read_texts(args.corpus)
    sample = [corpus[i] for i in np.random.default_rng(0).permutation(len(corpus))[: args.embed_sample]]
    encoder = Encoder(device="auto", precision=args.precision, backend=args.backend)
    started, cpu_started = time.perf_counter(), time.process_time()
    bases = encoder.encode(sample)
    embed_seconds, embed_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    per_text = embed_seconds / len(sample)

    index = VectorIndex(bases.shape[1], args.index)
    started, cpu_started = time.perf_counter(), time.process_time()
    run = embedding_rule(index, derived_vectors(bases, args.limit), args.embedding_threshold, args.batch)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    decisions = run.decisions
    prefix = min(args.agreement_prefix, args.limit)
    started = time.perf_counter()
    reference = exact_rule(derived_vectors(bases, prefix), args.embedding_threshold, prefix)
    exact_seconds = time.perf_counter() - started
    result = {
        "mode": "scale: real embeddings of embed_sample texts, index driven with derived vectors",
        "n": args.limit,
        "batch": args.batch,
        "index": args.index,
        "index_trained": index.trained,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "search_seconds": round(run.search_seconds, 1),
        "add_seconds": round(run.add_seconds, 1),
        "decide_seconds": round(run.other_seconds, 1),
        "filter_ms_per_candidate": round(1000 * seconds / args.limit, 3),
        "kept": int((~decisions).sum()),
        "rejected_by_embedding": int(decisions.sum()),
        "agreement_with_exact": round(float(np.mean(decisions[:prefix] == reference)), 5),
        "agreement_prefix": prefix,
        "exact_rejected_on_prefix": int(reference.sum()),
        "exact_reference_seconds": round(exact_seconds, 1),
        "embed_sample": len(sample),
        "embed_seconds": round(embed_seconds, 1),
        "embed_ms_per_text": round(1000 * per_text, 2),
        "embed_cpu_ms_per_text": round(1000 * embed_cpu / len(sample), 2),
        "embed_seconds_projected": round(per_text * args.limit, 0),
        "projected_total_seconds": round(per_text * args.limit + seconds, 0),
        # The filter's own work (search, adds, decisions) as a share of the whole, embedding projected to --limit.
        "filter_share_projected": round(seconds / (per_text * args.limit + seconds), 4),
        "embed_device": encoder.device,
        "precision": encoder.precision,
        "backend": encoder.backend,
        **backend_agreement(sample[: args.backend_check], encoder, args.embedding_threshold),
        "gpu_projection": None if encoder.device == "cpu" else "embed_seconds_projected is the GPU's",
        "peak_rss_mb": peak_rss_mb(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
