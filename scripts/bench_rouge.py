"""Benchmark the ROUGE-L similarity filter against the reference loop, on the same candidate stream.

Usage::

    python scripts/bench_rouge.py --limit 5000            # reference and ours, one JSON line
    python scripts/bench_rouge.py --limit 52000 --ours-only
    python scripts/bench_rouge.py --corpus PATH/t0_prompts_dev.jsonl --limit 5000

``--corpus`` defaults to the 400 T0 prompts in ``scripts/benchmarks/data``
(``benchmarks.filter_reference.SAMPLE_CORPUS``);
the figures in docs/results.md were measured on the whole T0 prompt corpus (27,337 prompts, same format), passed with
``--corpus``.

The reference is Stanford Alpaca's filter: the pool is tokenized once with ``rouge_score``'s tokenizer,
then each candidate is scored with ``rouge_scorer._score_lcs`` against every kept instruction through a
``multiprocessing.Pool`` and dropped when the max F1 exceeds the threshold. Alpaca opens a new process
pool per candidate; here one pool is opened for the whole run, which only makes the reference faster.
Both sides start from the same seed pool and use the same number of worker processes/threads.

When ``--limit`` exceeds the corpus, the corpus is repeated with the suffix `` (variant k)`` on the k-th
copy (k >= 2), and the JSON says how many copies were used (``repeated``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.filter_reference import SAMPLE_CORPUS, candidate_stream, read_texts, run_reference
from diversity.rouge_filter import RougeFilter
from sedi.config.seeds import bundled_path


def run_ours(seeds: list[str], candidates: list[str], threshold: float, workers: int, batch_size: int) -> list[str]:
    """The same stream through :class:`RougeFilter`, in generation-sized batches."""
    rouge_filter = RougeFilter(threshold, seeds, workers=workers)
    kept: list[str] = []
    for start in range(0, len(candidates), batch_size):
        batch = candidates[start : start + batch_size]
        kept.extend(text for text, verdict in zip(batch, rouge_filter.check_batch(batch), strict=True) if verdict.kept)
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=SAMPLE_CORPUS,
        help="JSONL with `text` or `instruction` (default: the 400 T0 prompts in scripts/benchmarks/data)",
    )
    parser.add_argument("--limit", type=int, default=5000, help="number of candidates to stream")
    parser.add_argument("--threshold", type=float, default=0.7, help="reject when max ROUGE-L F1 > this")
    parser.add_argument(
        "--seeds", type=str, default=str(bundled_path("seed_tasks.jsonl")), help="initial pool (JSONL); '' for none"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (reference) and threads (ours)")
    parser.add_argument("--batch-size", type=int, default=64, help="candidates per check_batch call (ours)")
    parser.add_argument("--ours-only", action="store_true", help="skip the reference loop")
    args = parser.parse_args(argv)

    seeds = read_texts(Path(args.seeds)) if args.seeds else []
    candidates, copies = candidate_stream(read_texts(args.corpus), args.limit)
    result: dict[str, object] = {
        "n": len(candidates),
        "threshold": args.threshold,
        "seeds": len(seeds),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "repeated": copies,
    }

    started = time.perf_counter()
    kept_ours = run_ours(seeds, candidates, args.threshold, args.workers, args.batch_size)
    seconds_ours = round(time.perf_counter() - started, 3)
    result["seconds_ours"] = seconds_ours
    result["kept_ours"] = len(kept_ours)
    if not args.ours_only:
        started = time.perf_counter()
        kept_reference = run_reference(seeds, candidates, args.threshold, args.workers)
        seconds_reference = time.perf_counter() - started
        result["seconds_reference"] = round(seconds_reference, 3)
        result["kept_reference"] = len(kept_reference)
        result["identical_kept"] = kept_reference == kept_ours
        result["speedup"] = round(seconds_reference / max(seconds_ours, 1e-9), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
