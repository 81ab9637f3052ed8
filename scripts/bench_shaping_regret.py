"""What learning request shapes costs on a teacher for which the settings' own shape is already the best.

``generation.shaping: learn`` spends requests on every shape (``min_tries`` each, then at least ``floor`` of the
requests) before and while it settles. On the bundled 270M teacher that paid for itself (docs/results.md); on a
teacher that follows the output format it may not. This replays the shipped rule (:mod:`feedback.shaping`, with the
default ``generation.shapes`` parameters) over the four shapes derived from the default settings, on synthetic
teachers whose kept tasks per request are given, and compares calls per kept task with those of the settings' shape
fixed (``generation.shaping: fixed``), round by round as a run plans them (evidence from earlier rounds only).

    python scripts/bench_shaping_regret.py [--calls 150] [--per-round 16] [--seeds 200] [--floor 0.05]
                                           [--min-tries 2] [--kept NAME=K0,K1,K2,K3 ...]

Each scenario's kept tasks per request are drawn as Binomial(tasks asked, keep rate). Prints one JSON line: per
scenario, the ratio of calls per kept task (learned over fixed; pooled over seeds, with the 2.5th and 97.5th
percentiles of the per-seed ratios), the share of requests each shape got and how often the best shape was named.
Pure Python, on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass

from feedback.shaping import ShapeArm, ShapingRule, best_shape, plan_shapes
from sedi.config.model import GenerationConfig

# Keep rate per candidate of each derived shape (settings', <=400 chars, half shown, quarter shown asking half).
# "format-following": every shape writes all it is asked for and loses the same share to the filters, so the three
# shapes asking 8 tie and the one asking 4 keeps half as many per request. "settings-best": as that, with the
# settings' shape keeping 20% more per candidate (say its longer examples give more distinct tasks). Measured
# teachers come in with --kept (kept per request of each shape, as `sedi status --json` reports under "shapes").
SCENARIOS: dict[str, list[float]] = {
    "format-following": [0.6, 0.6, 0.6, 0.6],
    "settings-best": [0.72, 0.6, 0.6, 0.6],
}


@dataclass(frozen=True)
class Run:
    learned: int  # tasks kept by the learned shapes' requests
    fixed: int  # tasks kept by as many requests of the settings' shape
    requests: list[int]  # learned requests per shape
    named: int | None  # the shape best_shape names at the end


def _kept(rng: random.Random, asked: int, rate: float) -> int:
    return sum(rng.random() < rate for _ in range(asked))


def simulate(rates: list[float], asked: list[int], calls: int, per_round: int, seed: int, rule: ShapingRule) -> Run:
    """One run of ``calls`` requests planned by the rule, and the same calls all of the settings' shape (index 0)."""
    outcomes = random.Random(f"outcomes:{seed}")
    n, kept = [0] * len(rates), [0] * len(rates)
    done = 0
    while done < calls:
        size = min(per_round, calls - done)
        arms = [ShapeArm(n[i], float(kept[i]), float(n[i])) for i in range(len(rates))]
        rngs = [random.Random(f"{seed}:{done + j}:shape") for j in range(size)]
        for i in plan_shapes(arms, rngs, rule):
            n[i] += 1
            kept[i] += _kept(outcomes, asked[i], rates[i])
        done += size
    fixed_rng = random.Random(f"fixed:{seed}")
    fixed = sum(_kept(fixed_rng, asked[0], rates[0]) for _ in range(calls))
    arms = [ShapeArm(n[i], float(kept[i]), float(n[i])) for i in range(len(rates))]
    return Run(sum(kept), fixed, n, best_shape(arms, rule.prior))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="Generation requests per run.")
    parser.add_argument("--per-round", type=int, default=16, help="Requests per round (generation.calls_per_round).")
    parser.add_argument("--seeds", type=int, default=200, help="Simulated runs per scenario.")
    defaults = GenerationConfig()
    shipped = defaults.shapes
    parser.add_argument("--floor", type=float, default=shipped.floor, help="generation.shapes.floor")
    parser.add_argument("--min-tries", type=int, default=shipped.min_tries, help="generation.shapes.min_tries")
    parser.add_argument(
        "--kept",
        action="append",
        default=[],
        metavar="NAME=K0,K1,K2,K3",
        help="One more scenario: each shape's kept tasks per request (drawn as Binomial(asked, K / asked)).",
    )
    args = parser.parse_args()
    rule = ShapingRule(min_tries=args.min_tries, floor=args.floor, prior=shipped.prior)
    start = time.perf_counter()
    shapes = defaults.shape_options()
    asked = [s.tasks_per_call for s in shapes]
    scenarios = dict(SCENARIOS)
    for item in args.kept:
        name, _, values = item.partition("=")
        kept = [float(v) for v in values.split(",")]
        if len(kept) != len(asked) or any(not 0 <= k <= a for k, a in zip(kept, asked, strict=False)):
            parser.error(
                f"--kept {item}: give {len(asked)} values, each between 0 and the tasks that shape asks {asked}"
            )
        scenarios[name] = [k / a for k, a in zip(kept, asked, strict=True)]
    result: dict[str, object] = {"calls": args.calls, "per_round": args.per_round, "seeds": args.seeds}
    result["rule"] = {"min_tries": rule.min_tries, "floor": rule.floor, "prior": rule.prior}
    result["shapes"] = [s.name for s in shapes]
    for name, rates in scenarios.items():
        runs = [simulate(rates, asked, args.calls, args.per_round, seed, rule) for seed in range(args.seeds)]
        per_seed = sorted(r.fixed / r.learned for r in runs if r.learned)
        cut = max(0, int(0.025 * len(per_seed)))
        yields = [a * r for a, r in zip(asked, rates, strict=True)]
        best = max(range(len(yields)), key=lambda i: yields[i])
        total = sum(sum(r.requests) for r in runs)
        result[name] = {
            "kept_per_request": [round(y, 2) for y in yields],
            # calls per kept task, learned over the settings' shape fixed: fixed kept over learned kept (same calls)
            "calls_per_kept_ratio": round(sum(r.fixed for r in runs) / sum(r.learned for r in runs), 4),
            "calls_per_kept_ratio_p95": [round(per_seed[cut], 4), round(per_seed[-1 - cut], 4)],
            "request_share": [round(sum(r.requests[i] for r in runs) / total, 3) for i in range(len(shapes))],
            "best_named_share": round(
                sum(r.named is not None and yields[r.named] == yields[best] for r in runs) / len(runs), 3
            ),
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
