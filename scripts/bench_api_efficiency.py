"""API efficiency, measured side by side: `sedi compare` on the embedded defaults (bundled teacher and student)
with a fixed call budget per arm, then one JSON line with every arm's calls per kept task, diversity, topics
covered, held-out loss and request shapes, the ratios to the baseline with 95% intervals, and each seed's numbers.

    python scripts/bench_api_efficiency.py [--run-dir runs/bench-api] [--max-calls 150] [--repeat 3]
                                           [--arms self-instruct,default] [--published-baseline] [--set k=v ...]
                                           [--sequential]

All runs (arms x seeds) go at once against one shared embedded teacher server (``sedi compare --parallel``, see
``sedi.experiment.parallel``) unless ``--sequential``; ``BENCH_SETTINGS`` below are applied to every arm alike.

Arms come from the one table in ``sedi.experiment.arms`` (``--arms``, the first the baseline; default ``self-instruct``
against ``default``, exactly what ``sedi run`` ships). They get the same teacher, seeds, student, seed values and
call budget (``--stop-at budget``). The goal the product is judged by is ``calls_per_kept_ratio`` (``default``
over ``self-instruct``) <= 0.5 with the high end of ``calls_per_kept_ratio_ci95`` below 1, diversity at most 3%
lower and held-out loss at most 2% higher than self-instruct. Ratios are pooled over seeds (all calls over all
kept tasks, per arm); their interval is the paired two-level bootstrap of ``sedi.report.stats``.

Per arm (key suffix: the arm's name with ``-`` as ``_``): ``calls_per_kept_<arm>``, and for every arm but the
baseline ``calls_per_kept_ratio_<arm>`` (over the baseline) with ``_ci95`` and ``_verdict``; means over seeds
(``heldout_loss``, ``diversity``, ``vendi``, ``topics_covered``, ``heldout_rouge_l``, ``kept``, ``calls``,
``promotions``, ``demotions``, with ``_stdev`` when --repeat > 1); from the runs' databases (``sedi.report.arm_stats``,
pooled over seeds): ``rejection_shares_<arm>`` (rule -> share of all candidates), ``candidates_per_request_<arm>``
and ``kept_per_request_<arm>`` (per answered generation request), ``truncated_request_share_<arm>`` (generation
requests whose response stopped at max_tokens), ``repair_calls_<arm>`` (null where runs do not count them),
``config_digest_<arm>`` (the config the arm ran under the first seed), and ``per_seed_<arm>`` rows.

With ``--summarise`` nothing runs: the table is built from the runs already under --run-dir (``seed-K/<arm>``, K
from 0 to --repeat - 1; ``<arm>`` with --repeat 1), finished or not; ``--common-rounds`` counts, per seed, only the
rounds every arm finished (a stopped or partial arm against the same rounds of the others), ``--answered`` only
calls that were answered (status ok or length: no interrupted or failed attempt). Rejection shares and request
figures stay whole-run; means over seeds cover the runs that measured them.

Today's other keys keep their meaning where their arms ran: ``calls_per_kept_ratio_paper`` (sedi-paper over
self-instruct), ``calls_per_kept_ratio_published`` (default over self-instruct-published) and
``calls_per_kept_ratio_steer`` (sedi-steer over sedi-paper). Rerunning with the same --run-dir resumes from the
runs' caches (nothing is paid twice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sedi.base.hardware import host_summary, offline_env
from sedi.exceptions import ConfigError
from sedi.experiment.arms import parse_arms
from sedi.experiment.comparison import run_row, tabulate
from sedi.report import arm_stats
from sedi.store.db import RunStore
from sedi.store.report_queries import RoundCalls, latest_config, round_calls
from sedi.store.rundir import connect_readonly

MEANS = {"diversity": "diversity_mean_cosine_distance", "vendi": "diversity_vendi", "topics_covered": "topics_covered"}
MEANS |= {"heldout_loss": "heldout_loss", "heldout_rouge_l": "heldout_rouge_l", "kept": "kept", "calls": "calls"}
MEANS |= {"promotions": "promotions", "demotions": "demotions"}
PER_SEED = ("calls", "kept", "calls_per_kept", "diversity_mean_cosine_distance", "topics_covered", "heldout_loss")


def summarise(table: dict[str, Any]) -> dict[str, Any]:
    """The JSON line's fields from a ``comparison.json`` table and its runs' databases."""
    arms = [arm for arm in table["arm_order"] if table["runs"].get(arm)]
    baseline = arms[0]
    result: dict[str, Any] = {"arms": arms, "baseline": baseline, "seeds": table["seeds"]}
    for key in ("calls_per_kept_ratio", "calls_per_kept_ratio_paper", "calls_per_kept_ratio_published"):
        result[key], result[f"{key}_ci95"] = table.get(key), table.get(f"{key}_ci95")
    steer = table["ratios"].get("sedi-steer over sedi-paper", {})
    result |= {"calls_per_kept_ratio_steer": steer.get("ratio"), "calls_per_kept_ratio_steer_ci95": steer.get("ci95")}
    for arm in arms:
        name, runs, row = arm.replace("-", "_"), table["runs"][arm], table["arms"][arm]
        calls, kept = sum(r["calls"] for r in runs), sum(r["kept"] for r in runs)
        result[f"calls_per_kept_{name}"] = round(calls / kept, 4) if kept else None  # pooled over seeds
        if arm != baseline:
            pair = table["ratios"][f"{arm} over {baseline}"]
            result[f"calls_per_kept_ratio_{name}"] = None if pair["ratio"] is None else round(pair["ratio"], 4)
            result[f"calls_per_kept_ratio_{name}_ci95"] = [round(v, 4) for v in pair["ci95"]] if pair["ci95"] else None
            result[f"calls_per_kept_ratio_{name}_verdict"] = pair["verdict"]
        for short, key in MEANS.items():
            result[f"{short}_{name}"] = row.get(key)
            if len(runs) > 1 and f"{key}_stdev" in row:
                result[f"{short}_{name}_stdev"] = row[f"{key}_stdev"]
        counts = [arm_stats.run_counts(Path(r["run_dir"])) for r in runs]
        result |= {f"{key}_{name}": value for key, value in arm_stats.pooled(counts).items()}
        result[f"config_digest_{name}"] = row.get("config_digest")
        result[f"per_seed_{name}"] = [
            {k: r.get(k) for k in PER_SEED} | arm_stats.pooled([c]) | {"config_digest": r.get("config_digest")}
            for r, c in zip(runs, counts, strict=True)
        ]
    return result


def read_rounds(run_dir: Path) -> tuple[list[RoundCalls], str | None]:
    """A run's per-round counts and the digest of the config its database records."""
    db = connect_readonly(run_dir / RunStore.DB_NAME)
    try:
        recorded = latest_config(db)
        return round_calls(db), recorded.digest if recorded else None
    finally:
        db.close()


def recount(
    run_dir: Path, read: tuple[list[RoundCalls], str | None], answered: bool, rounds: int | None
) -> dict[str, Any]:
    """A run's row for :func:`tabulate` from its :func:`read_rounds`, counting only its first ``rounds`` rounds (all
    when None) and, with ``answered``, only answered calls."""
    counted, digest = read
    per_round = [
        (float(r.answered if answered else r.calls), float(r.kept))
        for r in counted
        if rounds is None or r.round < rounds
    ]
    calls, kept = sum(c for c, _ in per_round), sum(k for _, k in per_round)
    row = run_row(run_dir) | {"rounds": per_round, "calls": calls, "kept": kept}
    row["calls_per_kept"] = calls / kept if kept else None
    return row | {"config_digest": digest, "rounds_counted": len(per_round)}


def summarise_runs(root: Path, arms: list[str], repeat: int, answered: bool, common: bool) -> dict[str, Any]:
    """The comparison table of the runs under ``root``, as ``sedi compare`` would write it, recounted."""
    dirs = {arm: [root / arm] if repeat == 1 else [root / f"seed-{k}" / arm for k in range(repeat)] for arm in arms}
    missing = [str(d) for paths in dirs.values() for d in paths if not (d / RunStore.DB_NAME).is_file()]
    if missing:
        raise SystemExit(f"error: no run at {missing[0]}: run the benchmark first, or name only the arms it ran")
    read = {arm: [read_rounds(d) for d in paths] for arm, paths in dirs.items()}
    # Per seed, the rounds every arm finished (None: count every round).
    limits = [min(sum(r.done for r in read[arm][k][0]) for arm in arms) if common else None for k in range(repeat)]
    runs = {
        arm: [recount(d, read[arm][k], answered, limits[k]) for k, d in enumerate(paths)] for arm, paths in dirs.items()
    }
    return tabulate(runs, list(range(repeat)), "budget")


# The benchmark's own settings, the same for every arm (a --set of the same key overrides them): rounds of 16 calls
# decoded together, held-out evaluation once at the end (loss only), and a timeout long enough for a request
# decoded in a batch of all the runs' requests on one shared server (288 s per request at 24 rows with 64-token
# answers, measured on 2 cores: the 300 s default would turn waiting into lost, counted calls).
BENCH_SETTINGS = (
    "generation.calls_per_round=16",
    "teacher.concurrency=16",
    "teacher.timeout_s=3600",
    "student.eval_every=1000",
    "student.heldout_generate=0",
)

# Said before a benchmark that will take hours longer than on the hosts its figures were measured on.
SLOW_HOST = (
    "note: no GPU and no native bf16 here (CPU capability {cpu_capability}, {cores} cores): the embedded teacher "
    "computes in float32. On such a 2-core host the 150-call, 3-seed benchmark answered 2.5 calls a minute (about "
    "6 h in all) against about 2 h 45 min with AVX512-BF16 (docs/results.md, 'The benchmark on a host without "
    "native bf16')."
)


def slow_host_note(host: dict[str, Any]) -> str | None:
    """The note printed before starting on ``host`` (``host_summary()``): only where the teacher runs in float32."""
    return SLOW_HOST.format(**host) if not host["native_bf16"] and host["gpu"] is None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench-api"))
    parser.add_argument("--max-calls", type=int, default=150, help="Teacher calls per arm (the fixed budget).")
    parser.add_argument("--repeat", type=int, default=3, help="Seeds per arm.")
    parser.add_argument(
        "--arms", default="self-instruct,default", help="Arms (sedi.experiment.arms), the first the baseline."
    )
    parser.add_argument("--published-baseline", action="store_true", help="Add the arm self-instruct-published.")
    parser.add_argument("--set", action="append", default=[], help="Extra config overrides, as for `sedi run`.")
    parser.add_argument(
        "--sequential", action="store_true", help="One run after another, each with its own teacher server."
    )
    parser.add_argument("--summarise", action="store_true", help="Run nothing: summarise the runs under --run-dir.")
    parser.add_argument("--common-rounds", action="store_true", help="With --summarise: the rounds all arms finished.")
    parser.add_argument("--answered", action="store_true", help="With --summarise: count answered calls only.")
    args = parser.parse_args()
    try:
        arms = parse_arms(args.arms)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    arms += ["self-instruct-published"] if args.published_baseline and "self-instruct-published" not in arms else []
    if args.summarise:
        table = summarise_runs(args.run_dir, arms, args.repeat, args.answered, args.common_rounds)
        result = summarise(table) | {"answered_only": args.answered, "common_rounds": args.common_rounds}
        result["rounds_counted"] = {arm: [r["rounds_counted"] for r in table["runs"][arm]] for arm in arms}
        print(json.dumps(result))
        return
    if args.common_rounds or args.answered:
        parser.exit(2, "error: --common-rounds and --answered recount existing runs: add --summarise\n")
    overrides = [f"budget.max_calls={args.max_calls}", *BENCH_SETTINGS, *args.set]  # --set comes last: it wins
    command = [sys.executable, "-m", "sedi", "compare", "--run-dir", str(args.run_dir), "--stop-at", "budget"]
    command += ["--repeat", str(args.repeat), "--arms", ",".join(arms)]
    command += [] if args.sequential else ["--parallel"]
    command += [a for item in overrides for a in ("--set", item)]
    host = host_summary()
    if note := slow_host_note(host):
        print(note, file=sys.stderr, flush=True)
    started = time.monotonic()
    with subprocess.Popen(command, env=offline_env(os.environ)) as comparison:
        while True:
            try:
                code = comparison.wait()
                break
            except KeyboardInterrupt:
                # The comparison got the same Ctrl-C: its runs finish the requests in flight (paid for) and stop.
                # subprocess.run would kill it a quarter of a second later, losing those answers: wait for it.
                continue
    if code:
        sys.exit(code)
    result = summarise(json.loads((args.run_dir / "comparison.json").read_text()))
    result.update(max_calls=args.max_calls, repeat=args.repeat, seconds=round(time.monotonic() - started, 1), host=host)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
