"""What each kind of generation prompt yielded: kept candidates per request, by how many machine tasks the prompt
showed, by its length in prompt tokens and by its request shape (generation.shaping; runs that record one), plus the
share of candidates each rule rejected. One JSON line.

    python scripts/prompt_yield.py RUN_DIR [RUN_DIR ...] [--from-round 1] [--token-edges 800,1000,1200]

Written to find out why the SeDi arms of the 150-call benchmark needed more calls per kept task than the baseline:
the in-context tasks a prompt shows decide much of what a small teacher writes back (see docs/results.md).
Reads the run databases only (read-only); works on a finished, stopped or running run.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from sedi.base.vocabulary import LENGTH
from sedi.store.plans import request_shapes
from sedi.store.report_queries import human_seed_ids, outcome_counts, request_yields
from sedi.store.rundir import DB_NAME, connect_readonly


def _group(rows: list[tuple[int, int, bool]]) -> dict[str, float]:
    n = len(rows)
    return {
        "requests": n,
        "candidates_per_request": round(sum(r[0] for r in rows) / n, 3),
        "kept_per_request": round(sum(r[1] for r in rows) / n, 3),
        "length_stopped_share": round(sum(r[2] for r in rows) / n, 3),  # finish_reason 'length': cut at max_tokens
    }


def _bin(tokens: int, edges: list[int]) -> str:
    low = 0
    for edge in edges:
        if tokens < edge:
            return f"{low}-{edge}"
        low = edge
    return f">={low}"


def run_yield(run_dir: Path, from_round: int, edges: list[int]) -> dict[str, Any]:
    db = connect_readonly(run_dir / DB_NAME)
    try:
        human = human_seed_ids(db)
        requests = request_yields(db, from_round)
        shapes = request_shapes(db)
        rules = outcome_counts(db, from_round)
    finally:
        db.close()
    every: list[tuple[int, int, bool]] = []
    by_machine: dict[str, list[tuple[int, int, bool]]] = {}
    by_tokens: dict[str, list[tuple[int, int, bool]]] = {}
    by_shape: dict[str, list[tuple[int, int, bool]]] = {}
    for request in requests:
        row = (request.candidates, request.kept, request.finish_reason == LENGTH)
        every.append(row)
        machine = sum(1 for task in json.loads(request.shown) if task not in human)
        by_machine.setdefault(str(machine), []).append(row)
        by_tokens.setdefault(_bin(request.prompt_tokens, edges), []).append(row)
        if request.request_key in shapes:
            by_shape.setdefault(shapes[request.request_key], []).append(row)
    counts = Counter(rules)
    total = sum(counts.values()) or 1
    return {
        "all": _group(every) if every else {},
        "by_machine_tasks_shown": {k: _group(v) for k, v in sorted(by_machine.items(), key=lambda kv: int(kv[0]))},
        "by_prompt_tokens": {k: _group(by_tokens[k]) for k in sorted(by_tokens, key=_bin_order)},
        "by_shape": {k: _group(v) for k, v in sorted(by_shape.items())},
        "candidate_share": {rule: round(n / total, 3) for rule, n in counts.most_common()},
    }


def _bin_order(label: str) -> int:
    return int(label.removeprefix(">=").split("-")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument(
        "--from-round", type=int, default=0, help="Leave out earlier rounds (round 0 shows no machine task in any arm)."
    )
    parser.add_argument("--token-edges", default="800,1000,1200", help="Prompt-token bin edges, comma-separated.")
    args = parser.parse_args()
    edges = sorted(int(e) for e in args.token_edges.split(","))
    out = {str(d): run_yield(d, args.from_round, edges) for d in args.run_dirs}
    print(json.dumps({"from_round": args.from_round, "runs": out}))


if __name__ == "__main__":
    main()
