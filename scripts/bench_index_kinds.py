"""Exact against IVF search as the pool grows: the measurement behind ``diversity.index.AUTO_EXACT_BELOW``.

Usage::

    python scripts/bench_index_kinds.py --bases VECTORS.npy --sizes 10000 100000 1000000

For each size, a pool of vectors derived from real MiniLM embeddings (``benchmarks.scale.derived_vectors``) is
indexed exactly and by IVF (the filter's settings), then queried with fresh derived vectors in batches of 20
(a generation round). One JSON line per size: milliseconds per query of each kind, the share of queries whose
embedding-rule decision (nearest cosine above the threshold) IVF gets the same as exact search, and IVF's
recall of the exact nearest neighbour.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.scale import derived_vectors
from diversity.index import VectorIndex


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=Path, required=True, help=".npy of real unit vectors (n, dim)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args(argv)
    bases = np.load(args.bases).astype(np.float32)
    queries = next(derived_vectors(bases, args.queries, seed=99))
    for size in args.sizes:
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        row: dict[str, object] = {"n": size}
        for kind in ("exact", "ivf"):
            index = VectorIndex(bases.shape[1], kind)
            started = time.perf_counter()
            next_id = 0
            for chunk in derived_vectors(bases, size, seed=1):
                index.add(np.arange(next_id, next_id + len(chunk)), chunk)
                next_id += len(chunk)
            row[f"{kind}_build_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            parts = [index.search(queries[s : s + args.batch], 1) for s in range(0, len(queries), args.batch)]
            row[f"{kind}_ms_per_query"] = round(1000 * (time.perf_counter() - started) / len(queries), 4)
            found[kind] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            del index
        (exact_ids, exact_sims), (ivf_ids, ivf_sims) = found["exact"], found["ivf"]
        rule_exact, rule_ivf = exact_sims[:, 0] > args.threshold, ivf_sims[:, 0] > args.threshold
        row.update(
            decision_agreement=float(np.mean(rule_exact == rule_ivf)),
            rejected_share_exact=float(rule_exact.mean()),
            recall_at_1=float(np.mean(exact_ids[:, 0] == ivf_ids[:, 0])),
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
