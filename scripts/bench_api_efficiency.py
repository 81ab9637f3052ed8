"""API efficiency, measured side by side: `sedi compare` on the embedded defaults (bundled teacher and student)
with a fixed small budget, then one JSON line with both methods' calls per kept task, diversity and held-out loss.

    python scripts/bench_api_efficiency.py [--run-dir runs/bench-api] [--max-calls 8] [--repeat 1] [--set k=v ...]

Both methods get the same teacher, seeds, student, seed value and call budget (``--stop-at budget``); the goal
the product is judged by is ``calls_per_kept_ratio`` <= 0.5 with diversity and held-out loss no worse.
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
    parser.add_argument("--set", action="append", default=[], help="Extra config overrides, as for `sedi run`.")
    args = parser.parse_args()
    overrides = [f"budget.max_calls={args.max_calls}", *args.set]
    command = [sys.executable, "-m", "sedi", "compare", "--run-dir", str(args.run_dir), "--stop-at", "budget"]
    command += ["--repeat", str(args.repeat)] + [a for item in overrides for a in ("--set", item)]
    started = time.monotonic()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    table = json.loads((args.run_dir / "comparison.json").read_text())
    sedi, base = table["methods"]["sedi"], table["methods"]["self-instruct"]
    print(
        json.dumps(
            {
                "calls_per_kept_sedi": sedi.get("calls_per_kept"),
                "calls_per_kept_self_instruct": base.get("calls_per_kept"),
                "calls_per_kept_ratio": table["calls_per_kept_ratio"],
                "diversity_sedi": sedi.get("diversity_mean_cosine_distance"),
                "diversity_self_instruct": base.get("diversity_mean_cosine_distance"),
                "vendi_sedi": sedi.get("diversity_vendi"),
                "vendi_self_instruct": base.get("diversity_vendi"),
                "heldout_loss_sedi": sedi.get("heldout_loss"),
                "heldout_loss_self_instruct": base.get("heldout_loss"),
                "kept_sedi": sedi.get("kept"),
                "kept_self_instruct": base.get("kept"),
                "calls_sedi": sedi.get("calls"),
                "calls_self_instruct": base.get("calls"),
                "max_calls": args.max_calls,
                "repeat": args.repeat,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
