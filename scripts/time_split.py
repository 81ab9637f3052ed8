"""Where the time of finished runs went: the seconds of each part of their rounds (``seconds_<part>``, recorded by
the loop and summed over resumes) and the teacher's tokens, for one run or a benchmark's many.

    python scripts/time_split.py runs/bench-api/seed-*/*

One JSON line: ``runs``; ``seconds_by_part`` (each part summed over all runs' rounds, largest first) and
``share_by_part`` (of their sum); ``per_run`` (each run's parts, prompt and completion tokens). Runs that share one
machine overlap in time, so the sums are machine-busy seconds of each part, not wall time: the wall time of a
benchmark is its own ``seconds``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sedi.store.report_queries import timed_seconds
from sedi.store.rundir import read_run_db
from sedi.store.summary_queries import call_totals


def split(run_dirs: list[Path]) -> dict[str, Any]:
    per_run = []
    totals: dict[str, float] = {}
    for run_dir in run_dirs:
        seconds, calls = read_run_db(run_dir, lambda db: (timed_seconds(db), call_totals(db)))
        parts = {name.removeprefix("seconds_"): round(value, 1) for name, value in seconds.items()}
        for part, value in parts.items():
            totals[part] = totals.get(part, 0.0) + value
        per_run.append(
            {
                "run": str(run_dir),
                "seconds_by_part": parts,
                "prompt_tokens": calls.prompt_tokens,
                "completion_tokens": calls.completion_tokens,
            }
        )
    total = sum(totals.values()) or 1.0
    ordered = dict(sorted(totals.items(), key=lambda item: -item[1]))
    return {
        "runs": len(run_dirs),
        "seconds_by_part": {part: round(value, 1) for part, value in ordered.items()},
        "share_by_part": {part: round(value / total, 3) for part, value in ordered.items()},
        "per_run": per_run,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+", help="Run directories (made by sedi run or sedi compare).")
    print(json.dumps(split(parser.parse_args(argv).run_dirs)))


if __name__ == "__main__":
    main()
