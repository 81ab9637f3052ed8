"""sedi from Python: one small run on the embedded teacher, then its data as `datasets` and pandas objects.

    python examples/python_api.py [RUN_DIR [KEY=VALUE ...]]    # default RUN_DIR: runs/python-api

KEY=VALUE items override the config last, as `sedi run --set KEY=VALUE` does (e.g. run.max_rounds=2).

Offline on CPU: the bundled Gemma-3-270m answers as the teacher on a loopback port (started and stopped by the
run) and the same model, with a LoRA adapter, is the student. One round of two generation calls keeps the
example short; run it again and it resumes, answering every request from the run's cache (0 new calls).
"""

from __future__ import annotations

import sys

import sedi

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/python-api"
overrides = sys.argv[2:]

# The embedded defaults (`sedi config show` lists them), made small with dotted keys, as `--set` takes them.
run = sedi.run(
    {"run.max_rounds": 1, "generation.calls_per_round": 2, "student.heldout_size": 0},
    run_dir=run_dir,
    overrides=overrides,
)
assert run.outcome is not None
print(f"{run.outcome.state}: {run.outcome.message}")

kept = run.kept()  # datasets.Dataset: instruction, input, output, round, in-context seed ids, ...
print(f"kept {kept.num_rows} tasks")
for row in kept.select(range(min(3, kept.num_rows))):
    print(f"- {row['instruction'][:100]!r} -> {row['output'][:60]!r}")

calls = run.ledger()  # pandas.DataFrame, one row per teacher call
print(f"{len(calls)} teacher calls, {int(calls['prompt_tokens'].sum())} prompt tokens, by kind:")
print(calls.groupby("kind").size().to_string())

print(run.metrics()[["round", "stage", "calls", "kept"]].to_string(index=False))  # one row per round
status = run.status()  # exactly what `sedi status --json` prints
print(f"keep rate {status['keep_rate']}, rejected by rule: {status['rejected_by_rule']}")
