"""``sedi export``: a run's kept tasks in the shapes fine-tuning libraries take, with a dataset card that says
how they were made, pushed to the Hugging Face Hub by :mod:`sedi.export.hub` when asked.

Formats, one row per *instance* (a task the teacher gave three instances becomes three rows, ids
``<task id>-<instance index>``, so no paid-for instance is left out):

- ``messages``: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``, TRL's conversational
  language-modeling shape;
- ``prompt-completion``: ``{"prompt": [user turn], "completion": [assistant turn]}``, TRL's conversational
  prompt-completion shape (the loss falls on the completion only);
- ``alpaca``: ``{"instruction", "input", "output"}`` as in Stanford Alpaca's ``alpaca_data.json``;
- ``sharegpt``: ``{"conversations": [{"from": "human", "value"}, {"from": "gpt", "value"}]}``.

Every format also carries each task's provenance and training signals as plain columns (:data:`SIGNAL_COLUMNS`,
explained in :mod:`sedi.store.signals` and in the card): ``round``, ``in_context`` (the seed ids its prompt
showed), ``train_round``, ``train_step``, ``step_loss``, ``grad_norm``, ``attractive`` and ``example_loss``;
``--select`` keeps the tasks a signal points at (:mod:`sedi.export.select`).

The file type follows ``--out``'s extension: ``.jsonl``, ``.json`` (one JSON array, as Alpaca ships) or
``.parquet``. The card is ``README.md`` beside the data (:mod:`sedi.export.card`). The run is only read:
exporting works on a run that is going on and on a read-only copy, like ``sedi status``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from sedi.base.files import fsync_write
from sedi.base.redact import redact
from sedi.exceptions import ConfigError, RunDirError
from sedi.export.card import CARD_TAG, dataset_card, read_run, seed_source
from sedi.export.select import EVERY_TASK, Selection, select
from sedi.store.dataset import user_turn
from sedi.store.signals import SIGNAL_COLUMNS

ExportFormat = Literal["messages", "prompt-completion", "alpaca", "sharegpt"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
SUFFIXES = (".jsonl", ".json", ".parquet")
# Beside each format's own fields: where the task came from and what training measured about it (plain
# columns: TRL and datasets ignore the ones they do not use).
PROVENANCE_COLUMNS = ["round", "in_context", *SIGNAL_COLUMNS]
COLUMNS: dict[str, list[str]] = {
    "messages": ["id", "messages", *PROVENANCE_COLUMNS],
    "prompt-completion": ["id", "prompt", "completion", *PROVENANCE_COLUMNS],
    "alpaca": ["instruction", "input", "output", *PROVENANCE_COLUMNS],
    "sharegpt": ["id", "conversations", *PROVENANCE_COLUMNS],
}


def to_rows(records: list[dict[str, Any]], fmt: ExportFormat) -> list[dict[str, Any]]:
    """One row per instance of every kept task, in ``fmt``'s shape (see the module docstring)."""
    rows = []
    for record in records:
        for i, inst in enumerate(record["instances"]):
            row_id, user = f"{record['id']}-{i}", user_turn(record["instruction"], inst["input"])
            if fmt == "messages":
                turns = [{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"]}]
                rows.append({"id": row_id, "messages": turns})
            elif fmt == "prompt-completion":
                rows.append(
                    {
                        "id": row_id,
                        "prompt": [{"role": "user", "content": user}],
                        "completion": [{"role": "assistant", "content": inst["output"]}],
                    }
                )
            elif fmt == "alpaca":
                rows.append({"instruction": record["instruction"], "input": inst["input"], "output": inst["output"]})
            else:
                turns = [{"from": "human", "value": user}, {"from": "gpt", "value": inst["output"]}]
                rows.append({"id": row_id, "conversations": turns})
            rows[-1].update(_provenance(record))
    return rows


def _provenance(record: dict[str, Any]) -> dict[str, Any]:
    """A row's provenance and signal columns (:data:`PROVENANCE_COLUMNS`); signals are null where not measured."""
    signals = record.get("signals") or {}
    origin = record["provenance"]
    return {"round": origin["round"], "in_context": [str(i) for i in origin["in_context"]]} | {
        name: signals.get(name) for name in SIGNAL_COLUMNS
    }


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` by ``path``'s extension, atomically (a reader never sees half a file)."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    elif path.suffix == ".json":
        fsync_write(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    else:
        fsync_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def check_out(out: Path, fmt: str, run_dir: Path | None = None, *, force: bool = False) -> Path:
    """Refuse a bad ``--format`` or ``--out`` before anything is written; returns where the card goes. An existing
    file is replaced only with ``force``, and nothing is ever written into ``run_dir``'s own ``data/``, which the
    run rewrites after every round (an export there would be lost, or would replace the run's own files)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if out.suffix not in SUFFIXES:
        raise ConfigError(f"--out {out}: name a file ending in {', '.join(SUFFIXES)} (the extension picks the type)")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory: name a file inside it, e.g. {out / ('train' + SUFFIXES[0])}")
    if run_dir is not None and out.resolve().is_relative_to((run_dir / "data").resolve()):
        raise ConfigError(f"--out {out}: is inside the run's own data directory ({run_dir / 'data'}): export elsewhere")
    if (out.exists() or out.is_symlink()) and not force:
        raise ConfigError(f"--out {out}: already exists: pass --force to replace it, or name a new file")
    card = out.parent / "README.md"
    if card.is_file() and CARD_TAG not in card.read_text(encoding="utf-8", errors="replace"):
        raise ConfigError(f"{card}: a README.md not written by sedi is there: export into another directory")
    return card


@dataclass(frozen=True)
class Exported:
    data: Path
    card: Path
    rows: int
    tasks: int


def export_dataset(
    run_dir: Path,
    fmt: str,
    out: Path,
    license_: str | None = None,
    *,
    force: bool = False,
    selection: Selection = EVERY_TASK,
) -> Exported:
    """Write the run's kept tasks (those ``selection`` keeps) to ``out`` in ``fmt`` and the dataset card beside it
    (see :func:`check_out`)."""
    card_path = check_out(out, fmt, run_dir, force=force)
    facts = read_run(run_dir)
    if not facts.records:
        raise RunDirError(f"{run_dir}: no kept tasks yet: run 'sedi run --run-dir {run_dir}' until a round keeps some")
    chosen: ExportFormat = fmt  # type: ignore[assignment]  # checked against FORMATS above
    seed_source(facts.config, license_)  # a wrong --license is refused before anything is written
    picked = select(facts.records, facts.signals, selection)
    if not picked:
        raise RunDirError(f"{run_dir}: --select {selection} keeps none of the {len(facts.records)} kept tasks")
    facts = replace(facts, records=picked)
    rows = to_rows(facts.records, chosen)
    card = redact(
        str(dataset_card(facts, chosen, COLUMNS[chosen], out, len(rows), license_))
    )  # also what a Hub push sends
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_rows(rows, out)
        fsync_write(card_path, card)
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot write there ({exc.strerror or exc}): choose a writable folder"
        ) from None
    return Exported(out, card_path, len(rows), len(facts.records))
