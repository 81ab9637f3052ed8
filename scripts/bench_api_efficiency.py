"""API efficiency, measured side by side: `sedi compare` on the embedded defaults (bundled teacher and student)
with a fixed call budget per arm, then one JSON line with every arm's calls per kept task, diversity, topics
covered and held-out loss, the ratios to the baseline with 95% intervals, and each seed's numbers.

    python scripts/bench_api_efficiency.py [--run-dir runs/bench-api] [--max-calls 150] [--repeat 3]
                                           [--published-baseline] [--set k=v ...]

Arms ``self-instruct``, ``sedi-paper`` (the method as stated) and ``sedi`` (prompts steered by yield) get the same
teacher, seeds, student, seed values and call budget (``--stop-at budget``); the goal the product is judged by
is ``calls_per_kept_ratio`` <= 0.5 with the high end of ``calls_per_kept_ratio_ci95`` below 1, diversity at most
3% lower and held-out loss at most 2% higher than self-instruct. ``calls_per_kept_ratio`` is pooled over seeds
(all calls over all kept tasks, per arm); its interval is the paired two-level bootstrap of ``sedi.stats``.
With ``--published-baseline`` a fourth arm, ``self_instruct_published``, runs the original
instruction-then-instances pipeline, and ``calls_per_kept_ratio_published`` is sedi over it.
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
    parser.add_argument("--max-calls", type=int, default=150, help="Teacher calls per arm (the fixed budget).")
    parser.add_argument("--repeat", type=int, default=3, help="Seeds per arm.")
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
    arms = {
        "self_instruct": "self-instruct",
        "sedi_paper": "sedi-paper",
        "sedi": "sedi",
        "self_instruct_published": "self-instruct-published",
    }
    result: dict[str, object] = {
        key: table.get(key)
        for key in (
            "calls_per_kept_ratio",
            "calls_per_kept_ratio_ci95",
            "calls_per_kept_ratio_paper",
            "calls_per_kept_ratio_paper_ci95",
            "calls_per_kept_ratio_published",
        )
    }
    steer = table["ratios"].get("sedi over sedi-paper", {})
    result["calls_per_kept_ratio_steer"], result["calls_per_kept_ratio_steer_ci95"] = (
        steer.get("ratio"),
        steer.get("ci95"),
    )
    fields = {
        "calls_per_kept": "calls_per_kept",
        "diversity": "diversity_mean_cosine_distance",
        "vendi": "diversity_vendi",
        "topics_covered": "topics_covered",
        "heldout_loss": "heldout_loss",
        "heldout_rouge_l": "heldout_rouge_l",
        "kept": "kept",
        "calls": "calls",
        "promotions": "promotions",
        "demotions": "demotions",
    }
    for name, arm in arms.items():
        runs = table["runs"].get(arm)
        if not runs:
            continue
        calls, kept = sum(r["calls"] for r in runs), sum(r["kept"] for r in runs)
        result[f"calls_per_kept_{name}"] = round(calls / kept, 4) if kept else None  # pooled over seeds
        row = table["arms"][arm]
        for short, key in fields.items():
            if short != "calls_per_kept":
                result[f"{short}_{name}"] = row.get(key)
            if args.repeat > 1 and f"{key}_stdev" in row:
                result[f"{short}_{name}_stdev"] = row[f"{key}_stdev"]
        result[f"per_seed_{name}"] = [
            {k: r.get(k) for k in ("calls", "kept", "calls_per_kept", "diversity_mean_cosine_distance",
                                   "topics_covered", "heldout_loss")}
            for r in runs
        ]  # fmt: skip
    result["seeds"] = table["seeds"]
    result.update(max_calls=args.max_calls, repeat=args.repeat, seconds=round(time.monotonic() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
