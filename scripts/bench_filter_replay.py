"""Replay recorded teacher responses through the Self-Instruct and the SeDi filters: keep rate by pool size.

Streams are written by ``scripts/record_stream.py`` (prompts show human seeds only, so no filter shaped them).
Their responses are replayed in index order, each stream after the previous one, and parsed exactly as the run
parses them (``sedi.stages.parsing.parse_generated``, alpaca style, completion prompt, truncated when finish_reason is
"length"). Every parsed item becomes a ``sedi.store.candidates.Candidate`` and is judged by the run's own
``sedi.stages.filtering.TaskFilter``, one response at a time, by two filters, each with its own growing pool that starts
with the 175 seed instructions:

- Self-Instruct: ``method: self-instruct`` (its heuristics, ROUGE-L above 0.7 rejects);
- SeDi: ``method: sedi`` (the same heuristics, ROUGE-L above 0.85, then cosine above 0.95 with the bundled MiniLM).

Keep rate (``keep_rate_*``): among the candidates that reach the similarity rule, i.e. that pass the format rules
(a truncated last item, a missing output) and the heuristics, the share the similarity rule lets into the pool.
Both filters apply identical rules before similarity, so both denominators come from the same candidates. Each
candidate is counted in the bucket of its own filter's pool size when it is judged (seeds plus machine tasks in
the similarity pool); ``pool_sizes`` are the buckets' lower edges, each bucket ``--bucket`` wide. A bucket with
fewer than ``--min-candidates`` candidates gets null. ``*_ci95``: percentile bootstrap (``--bootstrap``
resamples) over the responses that have candidates in the bucket. ``end_to_end_keep_rate_*``: kept tasks over
all parsed items (format, heuristic, similarity and instance rules together) over the whole replay.
``rouge_within_response_*``: of the ROUGE-L rejections, those above the filter's threshold against an earlier
parsed item of the same response (a teacher repeating itself). ``pool_end_*``: machine
tasks in the pool at the end (the seeds not counted). ``pool_size_at_paper_ratio``: the smallest bucket edge
where SeDi's keep rate is at least 1/0.64 = 1.5625 times the baseline's, both non-null; null if no bucket gets there.

    python scripts/bench_filter_replay.py --streams /tmp/rec-stream/stream.jsonl.gz[,second.jsonl.gz] [--bucket 250]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sedi.base.hardware import go_offline

go_offline()  # before transformers is imported

PAPER_RATIO = 1 / 0.64
SIMILARITY_RULES = ("rouge", "embedding")  # what sedi.stages.filtering's similarity step rejects with


def read_stream(path: Path) -> list[dict[str, Any]]:
    """A stream's complete records in index order (a torn last gzip member, from a killed recording, is skipped)."""
    records: dict[int, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        try:
            for line in handle:
                if line.endswith("\n"):
                    record = json.loads(line)
                    records[int(record["index"])] = record
        except (EOFError, OSError, zlib.error, json.JSONDecodeError):
            pass
    return [records[i] for i in sorted(records)]


@dataclass
class Tally:
    """One filter's replay: per pool-size bucket, (response number, passed similarity) for each candidate that
    reached the similarity rule; totals; every candidate's decision."""

    name: str
    rows: dict[int, list[tuple[int, bool]]] = field(default_factory=lambda: defaultdict(list))
    items: int = 0
    kept: int = 0
    reached: int = 0
    pooled: int = 0
    rules: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rouge_within_response: int = 0  # ROUGE-L rejections above the threshold against an earlier item of the response
    decisions: list[dict[str, Any]] = field(default_factory=list)


def judge_stream(
    records: list[dict[str, Any]], task_filter: Any, seeds: int, bucket: int, name: str, threshold: float
) -> Tally:
    from diversity.rouge import rouge_l_f1
    from sedi.stages.parsing import parse_generated
    from sedi.store.candidates import Candidate

    tally, next_id = Tally(name), 0
    pool_size = seeds
    for number, record in enumerate(records):
        truncated = record["finish_reason"] == "length"
        parsed = parse_generated(record["text"], style="alpaca", starts_inside_item=True, truncated=truncated)
        candidates = []
        for p in parsed:
            key = f"{record.get('stream', '')}:{record['index']}"
            candidates.append(
                Candidate(next_id, key, p.position, 0, p.instruction, p.input, p.output, p.problem, truncated)
            )
            next_id += 1
        # One response at a time, so each candidate's bucket is the pool size it was judged against.
        for n, candidate in enumerate(candidates):
            ((_, verdict),) = task_filter.judge([candidate])
            if verdict.rule == "rouge":
                earlier = (c.instruction for c in candidates[:n] if c.instruction)
                tally.rouge_within_response += any(rouge_l_f1(candidate.instruction, e) > threshold for e in earlier)
            tally.items += 1
            tally.kept += verdict.verdict == "kept"
            tally.rules[verdict.rule or "kept"] += 1
            tally.decisions.append(
                {"stream": record.get("stream"), "index": record["index"], "position": candidate.position}
                | {"instruction": candidate.instruction, "verdict": verdict.rule or verdict.verdict, "pool": pool_size}
            )
            reached = verdict.pooled or verdict.rule in SIMILARITY_RULES
            if reached:
                tally.reached += 1
                tally.pooled += verdict.pooled
                tally.rows[pool_size // bucket].append((number, verdict.pooled))
            pool_size += verdict.pooled
    tally.rules = dict(tally.rules)
    return tally


def bucket_rate(rows: list[tuple[int, bool]], rng: np.random.Generator, resamples: int) -> tuple[float, list[float]]:
    """Keep rate of a bucket and its 95% bootstrap interval, resampling responses (their candidates together)."""
    by_response: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for response, passed in rows:
        by_response[response][0] += passed
        by_response[response][1] += 1
    kept, total = np.array(list(by_response.values()), dtype=float).T
    picks = rng.integers(0, len(kept), size=(resamples, len(kept)))
    rates = kept[picks].sum(axis=1) / total[picks].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return round(kept.sum() / total.sum(), 4), [round(float(low), 4), round(float(high), 4)]


def report(tallies: dict[str, Tally], bucket: int, min_candidates: int, resamples: int, seed: int) -> dict[str, Any]:
    used = [b for t in tallies.values() for b in t.rows] or [0]
    buckets = range(min(used), max(used) + 1)  # from the seeds' bucket: no pool is smaller than the seeds
    out: dict[str, Any] = {"pool_sizes": [b * bucket for b in buckets], "pool_sizes_are": "lower edges"}
    rng = np.random.default_rng(seed)
    for key, tally in tallies.items():
        rates: list[float | None] = []
        intervals: list[list[float] | None] = []
        counts: list[int] = []
        for b in buckets:
            rows = tally.rows.get(b, [])
            counts.append(len(rows))
            if len(rows) < min_candidates:
                rates.append(None)
                intervals.append(None)
                continue
            rate, interval = bucket_rate(rows, rng, resamples)
            rates.append(rate)
            intervals.append(interval)
        out[f"keep_rate_{key}"] = rates
        out[f"keep_rate_{key}_ci95"] = intervals
        out[f"candidates_{key}"] = counts
    si, sd = out["keep_rate_self_instruct"], out["keep_rate_sedi"]
    out["ratio_sedi_to_self_instruct"] = [
        round(b / a, 3) if a and b is not None else None for a, b in zip(si, sd, strict=True)
    ]
    reached = [p for p, a, b in zip(out["pool_sizes"], si, sd, strict=True) if a and b and b >= PAPER_RATIO * a]
    out["pool_size_at_paper_ratio"] = reached[0] if reached else None
    for key, tally in tallies.items():
        out[f"pool_end_{key}"] = tally.pooled  # machine tasks in the pool at the end (seeds not counted)
        out[f"end_to_end_keep_rate_{key}"] = round(tally.kept / tally.items, 4) if tally.items else None
        out[f"keep_rate_overall_{key}"] = round(tally.pooled / tally.reached, 4) if tally.reached else None
        out[f"rules_{key}"] = tally.rules
        out[f"rouge_within_response_{key}"] = tally.rouge_within_response
    out["items"] = tallies["self_instruct"].items
    out["reached_similarity"] = tallies["self_instruct"].reached
    return out


def write_verdicts(path: Path, tallies: dict[str, Tally]) -> None:
    """One line per candidate: what each filter decided (its rule, or 'kept'/'pending') and its pool size then."""
    with path.open("w", encoding="utf-8") as handle:
        for si, sd in zip(tallies["self_instruct"].decisions, tallies["sedi"].decisions, strict=True):
            row = {k: si[k] for k in ("stream", "index", "position", "instruction")}
            row |= {"self_instruct": si["verdict"], "sedi": sd["verdict"]}
            row |= {"pool_size_self_instruct": si["pool"], "pool_size_sedi": sd["pool"]}
            handle.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", required=True, help="Stream files, comma-separated, replayed in this order.")
    parser.add_argument("--bucket", type=int, default=250, help="Bucket width in pool size (instructions).")
    parser.add_argument("--min-candidates", type=int, default=30, help="Fewer candidates in a bucket: null.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per bucket.")
    parser.add_argument("--limit", type=int, default=None, help="Replay only the first N responses in all.")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="Embedding cache (default: temp dir).")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    parser.add_argument("--verdicts", type=Path, default=None, help="Also write each candidate's verdicts (JSONL).")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.streams.split(",") if p]
    missing = [p for p in paths if not p.is_file()]
    if missing or args.bucket < 1:
        print(f"--streams: {missing[0]} does not exist" if missing else "--bucket must be >= 1", file=sys.stderr)
        return 2

    from sedi.config.model import SediConfig
    from sedi.config.seeds import load_seed_tasks
    from sedi.stages.embeddings import LazyEncoder
    from sedi.stages.filtering import TaskFilter

    records: list[dict[str, Any]] = []
    seen_seeds: dict[Any, Path] = {}
    for path in paths:
        stream = read_stream(path)
        stream_seed = stream[0].get("stream_seed") if stream else None
        if stream_seed in seen_seeds:
            print(f"--streams: {path} was recorded with the same --seed as {seen_seeds[stream_seed]} (the same "
                  "prompts): record the second stream with another --seed", file=sys.stderr)  # fmt: skip
            return 2
        seen_seeds[stream_seed] = path
        records += [{**r, "stream": path.name} for r in stream]
    records = records[: args.limit]
    started = time.monotonic()
    seeds = [t.instruction for t in load_seed_tasks(None)]
    cache = args.embedding_cache or Path(tempfile.gettempdir()) / "sedi-replay-embeddings.sqlite"
    tallies: dict[str, Tally] = {}
    for key, method in (("self_instruct", "self-instruct"), ("sedi", "sedi")):
        config = SediConfig.model_validate({"method": method})
        encode = LazyEncoder(None, cache, config.filter.embedding_precision, config.filter.embedding_backend)
        try:
            task_filter = TaskFilter(config, seeds, encode)
            threshold = config.filter.threshold_for(method)
            tallies[key] = judge_stream(records, task_filter, len(seeds), args.bucket, key, threshold)
        finally:
            encode.close()
    if args.verdicts is not None:
        write_verdicts(args.verdicts, tallies)
    out = report(tallies, args.bucket, args.min_candidates, args.bootstrap, args.seed)
    out = {
        "streams": [str(p) for p in paths],
        "responses": len(records),
        "length_finishes": sum(r["finish_reason"] == "length" for r in records),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in records),
        "bucket": args.bucket,
        "min_candidates": args.min_candidates,
        "keep_rate_denominator": "candidates passing format rules and heuristics (reaching the similarity rule)",
        "pool_size_counts": "seeds (175) + machine tasks in that filter's own similarity pool",
        **out,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
