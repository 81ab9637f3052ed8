"""The same prompts under other sampling settings: kept tasks per request, paired prompt by prompt.

Streams are written by ``scripts/record_stream.py`` with one ``--seed`` (the same prompts and request seeds) and
other settings (``--presence-penalty``, ``--frequency-penalty``); the first stream given is the base. Each stream is
replayed alone, in index order, through the product's own filter (``--method``: ``self-instruct`` by default,
its pool growing from the 175 seeds), exactly as ``scripts/bench_filter_replay.py`` replays one, and a response's
kept count is the number of its items the filter kept. Only prompts every stream holds are compared.

One JSON line: per stream (key suffix: its position, 0 the base) its penalties, ``kept_per_request``,
``candidates_per_request``, ``length_share`` (responses cut at max_tokens), ``completion_tokens_per_request`` and
``completion_tokens_per_kept``, ``rule_shares`` (rule -> share of parsed items); for every stream but the base
``kept_ratio_<i>`` (its kept tasks over the base's on the same prompts), ``kept_ratio_<i>_ci95`` (percentile
bootstrap over prompts, ``--bootstrap`` resamples) and ``calls_per_kept_verdict_<i>`` (in calls per kept task, the
inverse of the kept ratio: "fewer", "more" or "no clear difference in", as the interval allows).

    python scripts/bench_sampling_streams.py --streams base.jsonl.gz,presence1.jsonl.gz[,...] [--method sedi]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench_filter_replay import judge_stream, read_stream  # a sibling script: the replay itself

PENALTIES = ("presence_penalty", "frequency_penalty")


def settings(records: list[dict[str, Any]]) -> dict[str, float]:
    """A stream's penalties (records from before they were recorded had none: 0)."""
    return {key: float(records[0].get(key, 0.0)) if records else 0.0 for key in PENALTIES}


def inverse(kept_ratio: float) -> float:
    """Calls per kept task over the base's, from kept tasks per request over the base's (none kept: infinite)."""
    return math.inf if kept_ratio == 0 else 1 / kept_ratio


# Not sedi.report.stats.bootstrap_ratio_ci (the same resampling, prompts as the rounds of one seed): it gives no
# interval when an arm keeps nothing, and a setting that breaks the format so badly is what this script must name.
def ratio_interval(base: np.ndarray, other: np.ndarray, resamples: int, seed: int) -> list[float] | None:
    """95% percentile-bootstrap interval of sum(other) / sum(base), prompts resampled together."""
    picks = np.random.default_rng(seed).integers(0, len(base), size=(resamples, len(base)))
    below, above = base[picks].sum(axis=1), other[picks].sum(axis=1)
    usable = below > 0
    if not usable.any():
        return None
    low, high = np.percentile(above[usable] / below[usable], [2.5, 97.5])
    return [round(float(low), 3), round(float(high), 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", required=True, help="Stream files of one --seed, comma-separated, the base first.")
    parser.add_argument("--method", choices=("self-instruct", "sedi"), default="self-instruct", help="The filter.")
    parser.add_argument("--bootstrap", type=int, default=2000, help="Bootstrap resamples.")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="Embedding cache (default: temp dir).")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.streams.split(",") if p]
    missing = [p for p in paths if not p.is_file()]
    if missing or len(paths) < 2:
        problem = f"{missing[0]} does not exist" if missing else "give at least two streams, the base first"
        print(f"--streams: {problem}", file=sys.stderr)
        return 2
    streams = [read_stream(p) for p in paths]
    stream_seeds = {r.get("stream_seed") for records in streams for r in records}
    if len(stream_seeds) > 1:
        print(f"--streams: recorded with different --seed values {sorted(stream_seeds, key=str)} (other prompts): "
              "record every stream with the base's --seed", file=sys.stderr)  # fmt: skip
        return 2

    common = sorted(set.intersection(*({int(r["index"]) for r in records} for records in streams)))
    if not common:
        print("--streams: no prompt index is in every stream: record the same --n of each", file=sys.stderr)
        return 2

    from sedi.config.model import SediConfig
    from sedi.config.seeds import load_seed_tasks
    from sedi.report.stats import verdict
    from sedi.stages.embeddings import LazyEncoder
    from sedi.stages.filtering import TaskFilter

    started = time.monotonic()
    seeds = [t.instruction for t in load_seed_tasks(None)]
    config = SediConfig.model_validate({"method": args.method})
    threshold = config.filter.threshold_for(args.method)
    cache = args.embedding_cache or Path(tempfile.gettempdir()) / "sedi-replay-embeddings.sqlite"
    out: dict[str, Any] = {"streams": [str(p) for p in paths], "method": args.method, "prompts_compared": len(common)}
    kept_by_stream: list[np.ndarray] = []
    compared = set(common)
    # one encoder for every stream (the model loads once); a fresh filter per stream: each starts from the seeds
    # alone, like the first round of a run
    encode = LazyEncoder(None, cache, config.filter.embedding_precision, config.filter.embedding_backend)
    tallies = []
    try:
        for records in streams:
            records = [r for r in records if int(r["index"]) in compared]
            tally = judge_stream(records, TaskFilter(config, seeds, encode), len(seeds), 1, args.method, threshold)
            tallies.append((records, tally))
    finally:
        encode.close()
    for number, (records, tally) in enumerate(tallies):
        kept = Counter(d["index"] for d in tally.decisions if d["verdict"] == "kept")
        kept_by_stream.append(np.array([kept[i] for i in common], dtype=float))
        n, tokens = len(records), sum(r.get("completion_tokens") or 0 for r in records)
        out |= {f"settings_{number}": settings(records), f"kept_per_request_{number}": round(tally.kept / n, 3)}
        out |= {
            f"candidates_per_request_{number}": round(tally.items / n, 3),
            f"length_share_{number}": round(sum(r["finish_reason"] == "length" for r in records) / n, 3),
            f"completion_tokens_per_request_{number}": round(tokens / n, 1),
            f"completion_tokens_per_kept_{number}": round(tokens / tally.kept, 1) if tally.kept else None,
            f"rule_shares_{number}": {rule: round(c / tally.items, 3) for rule, c in sorted(tally.rules.items())},
        }
    base = kept_by_stream[0]
    for number, kept in enumerate(kept_by_stream[1:], start=1):
        point = float(kept.sum() / base.sum()) if base.sum() else None
        interval = ratio_interval(base, kept, args.bootstrap, args.seed)
        out[f"kept_ratio_{number}"] = None if point is None else round(point, 3)
        out[f"kept_ratio_{number}_ci95"] = interval
        calls = None if interval is None else (inverse(interval[1]), inverse(interval[0]))
        out[f"calls_per_kept_verdict_{number}"] = verdict(None if point is None else inverse(point), calls)
    out["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
