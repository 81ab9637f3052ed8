"""Which in-context tasks the SeDi prompts should show: ``self-instruct``, ``sedi-paper`` (``feedback.in_context:
pool``, a uniform subset of the whole seed pool, as the method states) and ``in-context-split`` (the same run with
``feedback.in_context: split``: 6 human seeds and 2 promoted ones, Self-Instruct's mix) on the embedded defaults,
paired by seed, with a fixed call budget. One JSON line: each arm's pooled calls per kept task, every arm's ratio
over the first (and in-context-split over sedi-paper) with a 95% interval (``experiment.comparison.pair_ratios``: the
rounds-level paired bootstrap for several seeds), diversity, topics, held-out loss, config digest, per seed.

    python scripts/bench_in_context.py [--run-dir runs/bench-in-context] [--max-calls 64] [--repeat 3]
                                       [--parallel 2] [--arms self-instruct,in-context-split,sedi-paper]
                                       [--set k=v ...] [--report-only]

Arms are those of ``sedi compare`` (the one table in ``sedi.experiment.arms``, resolved with the same run controls by
``experiment.arms.resolve``); ``sedi-split``, this script's old name, is accepted for ``in-context-split`` (the same
config, so --report-only still reads run directories named so). ``in-context-split`` differs from ``sedi-paper``
only in ``feedback.in_context``. Every run is its own ``sedi run`` process; ``--parallel 2``
runs two at once with one OpenMP thread each (on the 2-core machine, 1.6x the throughput of one two-thread run at
a time). Rerunning with the same --run-dir resumes the runs from their caches (nothing is generated twice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from sedi.base.hardware import host_summary, offline_env
from sedi.config.model import SediConfig, load_config
from sedi.exceptions import ConfigError
from sedi.experiment.arms import ARMS, parse_arms, resolve
from sedi.experiment.comparison import pair_ratios, run_row
from sedi.report import arm_stats

DEFAULT_ARMS = ("self-instruct", "in-context-split", "sedi-paper")
ALIASES = {"sedi-split": "in-context-split"}  # this script's old name for the same config
PER_SEED: tuple[str, ...] = ("calls", "kept", "calls_per_kept", "diversity_mean_cosine_distance", "topics_covered")
PER_SEED += ("heldout_loss", "config_digest")


def arm_config(base: SediConfig, arm: str, seed: int) -> SediConfig:
    """``arm``'s config under run seed ``seed``, exactly as ``sedi compare --stop-at budget`` runs it."""
    return resolve(base, ALIASES.get(arm, arm), seed, "budget")


def _pairs(arms: list[str]) -> list[tuple[str, str]]:
    """(baseline, arm): every arm over the first, and the split over the whole-pool draw when both ran."""
    pairs = [(arms[0], arm) for arm in arms[1:]]
    split = next((a for a in arms if ALIASES.get(a, a) == "in-context-split"), None)
    if split and "sedi-paper" in arms and ("sedi-paper", split) not in pairs and arms[0] != split:
        pairs.append(("sedi-paper", split))
    return pairs


def summarise(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON line's fields from each arm's per-seed run rows (``experiment.comparison.run_row``), seeds in order."""
    out: dict[str, Any] = {}
    for arm, runs in rows.items():
        name = arm.replace("-", "_")
        calls, kept = sum(r["calls"] for r in runs), sum(r["kept"] for r in runs)
        out[f"calls_per_kept_{name}"] = round(calls / kept, 4) if kept else None
        for key in ("diversity_mean_cosine_distance", "topics_covered", "heldout_loss"):
            values = [r[key] for r in runs if r.get(key) is not None]
            out[f"{key}_{name}"] = round(sum(values) / len(values), 4) if values else None
        out[f"per_seed_{name}"] = [{k: r.get(k) for k in PER_SEED} for r in runs]
    for base, arm in _pairs(list(rows)):
        key = f"{arm.replace('-', '_')}_over_{base.replace('-', '_')}"
        pair = pair_ratios(rows, arm, base)
        out[key] = round(pair["ratio"], 4) if pair["ratio"] is not None else None
        out[f"{key}_ci95"] = [round(v, 4) for v in pair["ci95"]] if pair["ci95"] else None
        out[f"{key}_per_seed"] = [round(v, 4) if v is not None else None for v in pair["per_seed"]]
        out[f"{key}_verdict"] = pair["verdict"]
    return out


def _row(run_dir: Path) -> dict[str, Any]:
    """One run's row, with the digest of the config its database records."""
    return run_row(run_dir) | {"config_digest": arm_stats.run_counts(run_dir)["config_digest"]}


def _run(config_path: Path, run_dir: Path, threads: int | None) -> None:
    env = offline_env(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "sedi", "run", str(config_path), "--run-dir", str(run_dir)]
    with (run_dir.parent / f"{run_dir.name}.log").open("a") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode not in (0, 3):  # 3: stopped by its budget, which is how every run of this benchmark ends
        raise subprocess.CalledProcessError(done.returncode, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench-in-context"))
    parser.add_argument("--max-calls", type=int, default=64, help="Teacher calls per run (the fixed budget).")
    parser.add_argument("--repeat", type=int, default=3, help="Seeds per arm (run.seed, run.seed + 1, ...).")
    parser.add_argument("--parallel", type=int, default=2, help="Runs at once (one OpenMP thread each when > 1).")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help="Comma-separated, from: " + ", ".join(ARMS))
    parser.add_argument("--set", action="append", default=[], help="Config overrides, as for `sedi run`.")
    parser.add_argument("--report-only", action="store_true", help="Summarise the run directories; run nothing.")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    try:
        parse_arms(",".join(ALIASES.get(a, a) for a in arms))
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    base = load_config(None, [f"budget.max_calls={args.max_calls}", *args.set])
    seeds = [base.run.seed + k for k in range(args.repeat)]
    jobs = []
    for seed in seeds:
        for arm in arms:
            path = args.run_dir / f"seed-{seed}" / f"{arm}.yaml"
            if not args.report_only:  # a summary only reads the run directories
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(arm_config(base, arm, seed).model_dump(mode="json"), sort_keys=False))
            jobs.append((path, args.run_dir / f"seed-{seed}" / arm))
    started = time.monotonic()
    threads = 1 if args.parallel > 1 else None
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(lambda job: _run(job[0], job[1], threads), jobs))
    rows = {arm: [_row(args.run_dir / f"seed-{seed}" / arm) for seed in seeds] for arm in arms}
    result = summarise(rows) | {"seeds": seeds, "max_calls": args.max_calls}
    print(json.dumps(result | {"seconds": round(time.monotonic() - started, 1), "host": host_summary()}))


if __name__ == "__main__":
    main()
