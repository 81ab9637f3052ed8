"""API efficiency, measured side by side: `sedi compare` on the embedded defaults (bundled teacher and student)
with a fixed small budget, then one JSON line with both methods' calls per kept task, diversity and held-out loss.

    python scripts/bench_api_efficiency.py [--run-dir runs/bench-api] [--max-calls 8] [--repeat 1]
                                           [--published-baseline] [--set k=v ...]

Both methods get the same teacher, seeds, student, seed value and call budget (``--stop-at budget``); the goal
the product is judged by is ``calls_per_kept_ratio`` <= 0.5 with diversity and held-out loss no worse.
``self_instruct`` shares sedi's generation settings (the method's own effect); with ``--published-baseline`` a
third arm, ``self_instruct_published``, runs the original instruction-then-instances pipeline, and
``calls_per_kept_ratio_published`` is sedi over it.
Rerunning with the same --run-dir resumes from the runs' caches (nothing is paid twice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench-api"))
    parser.add_argument("--max-calls", type=int, default=8, help="Teacher calls per method (the fixed budget).")
    parser.add_argument("--repeat", type=int, default=1, help="Seeds per method (mean reported).")
    parser.add_argument("--published-baseline", action="store_true", help="Add Self-Instruct as published.")
    parser.add_argument("--set", action="append", default=[], help="Extra config overrides, as for `sedi run`.")
    args = parser.parse_args()
    overrides = [f"budget.max_calls={args.max_calls}", *args.set]
    command = [sys.executable, "-m", "sedi", "compare", "--run-dir", str(args.run_dir), "--stop-at", "budget"]
    command += ["--repeat", str(args.repeat)] + [a for item in overrides for a in ("--set", item)]
    command += ["--published-baseline"] if args.published_baseline else []
    started = time.monotonic()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    table = json.loads((args.run_dir / "comparison.json").read_text())
    arms = {"sedi": "sedi", "self_instruct": "self-instruct", "self_instruct_published": "self-instruct-published"}
    result: dict[str, object] = {
        "calls_per_kept_ratio": table["calls_per_kept_ratio"],
        "calls_per_kept_ratio_published": table.get("calls_per_kept_ratio_published"),
    }
    fields = {
        "calls_per_kept": "calls_per_kept",
        "diversity": "diversity_mean_cosine_distance",
        "vendi": "diversity_vendi",
        "heldout_loss": "heldout_loss",
        "heldout_rouge_l": "heldout_rouge_l",
        "kept": "kept",
        "calls": "calls",
    }
    for name, arm in arms.items():
        row = table["methods"].get(arm)
        if row is None:
            continue
        for short, key in fields.items():
            result[f"{short}_{name}"] = row.get(key)
            if args.repeat > 1 and f"{key}_stdev" in row:
                result[f"{short}_{name}_stdev"] = row[f"{key}_stdev"]
    result.update(max_calls=args.max_calls, repeat=args.repeat, seconds=round(time.monotonic() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
