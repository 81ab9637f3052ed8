"""A small synthetic run directory, written through :class:`RunStore` (so its schema is the real one), for
looking at ``sedi report`` without paying a teacher: ``scripts/screenshot_report.py`` renders it and the report
tests check the page against it.

A finished run has two rounds, ten calls (one failed), thirty candidates, twelve training steps of which two are
attractive, per-round metrics and seed-pool history; ``seed`` varies the numbers a little, as between two runs.
"""

from __future__ import annotations

import random
from pathlib import Path

from sedi.base.vocabulary import RequestKind, SeedAction
from sedi.store import synthetic
from sedi.store.db import RunStore

RULES = ["rouge_similarity", "too_short", "blacklisted_word", "bad_start", "duplicate"]


def write_sample_run(run_dir: Path, method: str, *, training: bool = True, seed: int = 0) -> Path:
    """A finished two-round run; without ``training`` only the ledger (calls and responses) is written."""
    rng = random.Random(seed)
    with RunStore(run_dir) as store, store.transaction():
        store.record_config("digest", f"method: {method}\nteacher:\n  model: test-teacher\n")
        store.set_state("finished")
        call_ids: list[tuple[int, str, int]] = []
        for i in range(10):
            rnd, key = i // 5, f"req-{i}"
            failed = i == 3  # one failed attempt: a call that produced nothing
            call_id = synthetic.call(
                store, key, "error" if failed else "ok", (0, 0) if failed else (200 + i, 90 + 3 * i),
                0.0 if failed else 0.0011 * (i + 1), 1_700_000_000.0 + i,
            )  # fmt: skip
            if not failed:
                kind: RequestKind = "classify" if i == 4 else "tasks"
                synthetic.answered_request(store, key, rnd, kind, call_id)
                if kind == "tasks":
                    call_ids.append((call_id, key, rnd))
        if not training:
            return run_dir
        for n in range(30):
            _, key, rnd = call_ids[n % len(call_ids)]
            verdict = rng.choice(["kept", "kept", "rejected", "rejected", "pending"])
            synthetic.candidate(store, key, n, rnd, verdict, rng.choice(RULES) if verdict == "rejected" else None)
        for step in range(1, 13):
            grad_norm = 2.5 / step**0.5 + rng.random() * 0.2
            synthetic.train_step(store, (step - 1) // 6, step, grad_norm, 3.0 - step * 0.1, step in (4, 10))
        d = seed / 10  # runs differ a little, as two real runs would
        metrics = {
            "keep_rate": (0.4 - d, 0.5), "heldout_loss": (2.9, 2.4 - d), "diversity_vendi": (9.5, 12.25 + 10 * d),
            "diversity_mean_cosine_distance": (0.71, 0.74 + d), "seed_pool_size": (175.0, 178.0),
            "seed_pool_machine": (3.0, 4.0), "seconds_generate": (55.0, 61.0), "seconds_train": (21.0, 24.0),
            "seconds_evaluate": (9.0, 9.5),
        }  # fmt: skip
        for rnd in (0, 1):
            store.record_metrics(rnd, {name: values[rnd] for name, values in metrics.items()})
        moves: list[tuple[str, SeedAction, int]] = [
            ("t1", "promote", 0), ("t2", "promote", 0), ("t3", "promote", 0),
            ("t4", "promote", 1), ("t5", "promote", 1), ("t2", "demote", 1),
        ]  # fmt: skip
        for task, action, rnd in moves:
            synthetic.seed_move(store, task, action, rnd)
    return run_dir
