"""The dataset card ``sedi export`` writes beside its data (``README.md``, the Hub's dataset-card format: a YAML
header the Hub and ``datasets.load_dataset(DIR)`` read, then markdown), and the facts of a run that it and
``sedi export-model``'s cards tell (:func:`read_run`).

The card says how the data was made (teacher, method and its settings, spending, verdicts, seeds and their
licence, config digest), names the columns of the chosen format and explains the provenance and training-signal
columns (:data:`sedi.store.signals.SIGNAL_COLUMNS`), shows how to load the file, and ends with the run's whole
config. Every card carries :data:`CARD_TAG`, so that a ``README.md`` without it is known to be the user's and is
never overwritten. The run is only read (no lock), like ``sedi status``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sedi.config.model import upgrade_recorded
from sedi.exceptions import ConfigError, RunDirError
from sedi.report.summary import read_summary
from sedi.stages.resume import SEEDS_DIGEST
from sedi.store.dataset import kept_records
from sedi.store.ledger import cost_text
from sedi.store.report_queries import latest_config, meta_value
from sedi.store.rundir import DB_NAME, connect_readonly, unreadable
from sedi.store.signals import TaskSignals, task_signals

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

CARD_TAG = "sedi-instruct"  # on every card sedi writes: a README.md without it is the user's, never overwritten
EMBEDDED_SEEDS = "the 175 Self-Instruct seed tasks shipped with sedi (sedi/data/seed_tasks.jsonl)"
EMBEDDED_SEEDS_LICENSE = "Apache-2.0"
# The config sections that make a method what it is (the card lists their settings; the whole config follows).
_METHOD_SECTIONS = {"self-instruct": ("generation", "instances", "filter"), "sedi": ("generation", "instances",
                    "filter", "training_batches", "feedback")}  # fmt: skip


@dataclass(frozen=True)
class RunFacts:
    """What the cards say about a run, read without taking its lock."""

    run_dir: Path
    summary: dict[str, Any]  # sedi status --json
    config: dict[str, Any]  # the effective config of the latest start
    config_body: str  # the same, as recorded (YAML)
    config_digest: str  # as recorded in the run database
    seeds_digest: str | None
    records: list[dict[str, Any]]  # data/kept.jsonl's records (sedi.store.dataset.kept_records)
    signals: dict[int, TaskSignals]  # by candidate id (sedi.store.signals)


@dataclass
class _ReadOnlyRun:
    db: sqlite3.Connection


def read_run(run_dir: Path) -> RunFacts:
    """Everything ``sedi export`` and ``sedi export-model`` need from a run directory, read-only."""
    summary = read_summary(run_dir)  # one-line RunDirError when there is no run here
    db_path = run_dir / DB_NAME
    try:
        db = connect_readonly(db_path)
        try:
            db.row_factory = sqlite3.Row
            recorded = latest_config(db)
            seeds = meta_value(db, SEEDS_DIGEST)
            records = kept_records(_ReadOnlyRun(db))
            signals = task_signals(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None
    if recorded is None:
        raise RunDirError(f"{run_dir}: the run never started (no config recorded): run 'sedi run --run-dir {run_dir}'")
    config = upgrade_recorded(yaml.safe_load(recorded.body))  # a run of an earlier version: today's key names
    return RunFacts(run_dir, summary, config, recorded.body, recorded.digest, seeds, records, signals)


def seed_source(config: dict[str, Any], license_: str | None) -> tuple[str, str]:
    """Where the seed tasks came from and under which licence (``--license`` for a user's file)."""
    path = (config.get("seeds") or {}).get("path")
    if path is None and license_ is not None:
        raise ConfigError(
            f"--license {license_}: the run used the embedded seed tasks ({EMBEDDED_SEEDS_LICENSE}); --license "
            "records the licence of a seeds.path file: drop it"
        )
    if path is None:
        return EMBEDDED_SEEDS, EMBEDDED_SEEDS_LICENSE
    return f"`{path}` (seeds.path)", license_ or "unknown (pass --license to record it)"


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M"


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flat(f"{prefix}.{key}", sub)]
    return [(prefix, value)]


def teacher_name(config: dict[str, Any]) -> str:
    teacher = config.get("teacher") or {}
    return f"{teacher.get('provider', '?')}/{teacher.get('model', '?')}"


def how_made(facts: RunFacts, license_: str | None) -> str:
    """The card's account of the run: teacher, method and settings, spending, verdicts, seeds, config digest."""
    s, config = facts.summary, facts.config
    teacher = config.get("teacher") or {}
    cost = cost_text(s, 6)  # "at most $X" when usage went unreported: never $0 for what was charged
    rate = "n/a" if s["keep_rate"] is None else f"{s['keep_rate']:.1%}"
    rejects = ", ".join(f"{rule} {n}" for rule, n in s["rejected_by_rule"].items()) or "none"
    source, licence = seed_source(config, license_)
    method = str(config.get("method", "?"))
    settings = [item for section in _METHOD_SECTIONS.get(method, ()) for item in _flat(section, config.get(section))]
    lines = [
        "| | |",
        "|---|---|",
        f"| teacher | `{teacher_name(config)}` ({teacher.get('mode', '?')} mode) |",
        f"| method | `{method}` |",
        f"| rounds finished | {s['rounds']} |",
        f"| teacher calls | {s['calls']} ({s['failed_calls']} failed; {s['cache_hits']} answered from the run's "
        "cache, not paid again) |",
        f"| tokens | {s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion |",
        f"| cost | {cost} |",
        f"| candidates | {s['candidates']}, kept {s['kept']} (keep rate {rate}) |",
        f"| calls per kept task | {s['calls_per_kept'] if s['calls_per_kept'] is not None else 'n/a'} |",
        f"| rejected, by rule | {rejects} |",
        f"| seed tasks | {source}; licence: {licence} |",
        f"| config digest | `{facts.config_digest}` |",
        "",
        "Settings of the method:",
        "",
        *(f"- `{key}`: `{json.dumps(value)}`" for key, value in settings),
    ]
    return "\n".join(lines)


def dataset_card(
    facts: RunFacts, fmt: str, columns: Sequence[str], data: Path, rows: int, license_: str | None
) -> DatasetCard:
    """The Hub dataset card (``README.md``) for one exported file of ``fmt``, whose columns are ``columns``."""
    from huggingface_hub import DatasetCard, DatasetCardData

    s = facts.summary
    _, licence = seed_source(facts.config, license_)
    spdx = licence.lower() if " " not in licence else "unknown"
    builder = "parquet" if data.suffix == ".parquet" else "json"
    data_card = DatasetCardData(
        license=spdx,
        task_categories=["text-generation"],
        tags=list(dict.fromkeys([CARD_TAG, "synthetic", "self-instruct", str(facts.config.get("method", "sedi"))])),
        size_categories=[_size_category(rows)],
        pretty_name=f"{facts.run_dir.name} ({fmt})",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data.name}]}],
        sedi={
            "config_digest": facts.config_digest,
            "seeds_digest": facts.seeds_digest,
            "teacher": teacher_name(facts.config),
            "method": facts.config.get("method"),
            "format": fmt,
            "rows": rows,
            "tasks": len(facts.records),
            **{key: s[key] for key in ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "candidates")},
            **{key: s[key] for key in ("kept", "keep_rate", "rejected_by_rule")},
            "cost_upper_bound": bool(s.get("cost_upper_bound")),  # cost_usd is "at most": usage went unreported
        },
    )
    example = _example(fmt, data, builder)
    body = f"""
# {facts.run_dir.name}: synthetic instruction data ({fmt})

{rows} rows from {len(facts.records)} tasks that a teacher model wrote and sedi-instruct kept
(`{facts.config.get("method")}` method). Each row is one *instance* of a task: a task with several
instances gives several rows (`id` is `<task id>-<instance index>`).

{provenance(facts, license_)}

## Columns

`{data.name}` ({fmt}): {", ".join(f"`{c}`" for c in columns)}. {_FORMAT_NOTES[fmt]}

{_SIGNAL_NOTES}

```python
{example}
```

## Licence

The seed tasks are under {licence}. The rows were written by the teacher model `{teacher_name(facts.config)}`:
its provider's terms of use apply to them as well.

{full_config(facts)}
"""
    return DatasetCard(f"---\n{data_card.to_yaml()}\n---\n{body}")


def provenance(facts: RunFacts, license_: str | None) -> str:
    return f"## How the data was made\n\n{how_made(facts, license_)}"


def full_config(facts: RunFacts) -> str:
    return (
        f"## The run's full configuration\n\n<details><summary>config.yaml (digest {facts.config_digest})</summary>"
        f"\n\n```yaml\n{facts.config_body.rstrip()}\n```\n\n</details>"
    )


_SIGNAL_NOTES = """Provenance and training signals: `round` is the round that generated the task and `in_context`
the ids of the tasks its prompt showed. The student was trained on the kept tasks as the run went: `train_round`
and `train_step` name the round and optimizer step that trained the task (null if never trained),
`step_loss` the mean training loss of that step's batch, `grad_norm` its total gradient norm before clipping (the
signal that picks attractive batches), `attractive` whether that batch was its feedback window's attractive batch
(its tasks joined the seed pool), and `example_loss` the task's own loss after its round (measured only with
`feedback.promote: top_k`)."""

_FORMAT_NOTES = {
    "messages": "TRL's conversational language-modeling format: `SFTTrainer(train_dataset=...)` takes it as is.",
    "prompt-completion": "TRL's conversational prompt-completion format: `SFTTrainer` takes it as is and puts "
    "the loss on the completion only.",
    "alpaca": "Stanford Alpaca's fields; TRL does not take them directly: map each row to `messages` first.",
    "sharegpt": "The common ShareGPT shape (`from`: `human` / `gpt`); TRL does not take it directly: map "
    "`human` to `user` and `gpt` to `assistant` first.",
}


def _example(fmt: str, data: Path, builder: str) -> str:
    load = f'ds = load_dataset("{builder}", data_files="{data.name}", split="train")'
    lines = ["from datasets import load_dataset", "", load]
    if fmt in ("messages", "prompt-completion"):
        lines += ["", "from trl import SFTConfig, SFTTrainer", 'SFTTrainer(model="...", train_dataset=ds).train()']
    return "\n".join(lines)
