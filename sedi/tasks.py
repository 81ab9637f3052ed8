"""Task files: the bundled seed and held-out sets, or a user's JSONL, validated line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sedi._types import TaskOrigin
from sedi.exceptions import ConfigError

BUNDLED_SEEDS = "seed_tasks.jsonl"
BUNDLED_HELDOUT = "user_oriented_instructions.jsonl"
_FORMAT_HINT = (
    'each line must be a JSON object like {"instruction": "...", "instances": [{"input": "", "output": "..."}]} '
    'or {"instruction": "...", "input": "", "output": "..."}'
)


@dataclass(frozen=True)
class Task:
    """One task with its first instance. ``origin`` is 'human' for seeds, 'machine' for generated."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    origin: TaskOrigin = "human"


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("sedi") / "data" / name))


def _field(obj: dict[str, Any], name: str, where: str, *, required: bool) -> str:
    value = obj.get(name, "" if not required else None)
    if value is None:
        raise ConfigError(f"{where}: field '{name}' is missing: {_FORMAT_HINT}")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field '{name}' must be a string, got {type(value).__name__}: {_FORMAT_HINT}")
    return value


def _parse_task(obj: Any, where: str, index: int, origin: TaskOrigin) -> Task:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}: {_FORMAT_HINT}")
    instruction = _field(obj, "instruction", where, required=True).strip()
    if not instruction:
        raise ConfigError(f"{where}: field 'instruction' is empty: give every task an instruction")
    instances = obj.get("instances")
    if instances is not None:
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise ConfigError(f"{where}: field 'instances' must be a non-empty list of objects: {_FORMAT_HINT}")
        first = instances[0]
        input_text = _field(first, "input", f"{where}: instances[0]", required=False)
        output = _field(first, "output", f"{where}: instances[0]", required=True)
    else:
        input_text = _field(obj, "input", where, required=False)
        output = _field(obj, "output", where, required=True)
    task_id = obj.get("id", f"{origin}-{index}")
    return Task(str(task_id), instruction, input_text.strip(), output.strip(), origin)


def load_tasks(path: Path, *, origin: TaskOrigin = "human", config_field: str = "seeds.path") -> list[Task]:
    """Read and validate a JSONL task file; errors name the file, line, field and the fix."""
    if not path.is_file():
        raise ConfigError(f"{path}: task file not found ({config_field}): fix the path or unset {config_field}")
    tasks: list[Task] = []
    seen: set[str] = set()
    try:
        # utf-8-sig: editors on Windows save JSONL with a byte-order mark, which is not part of the JSON.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text ({config_field}): save it as UTF-8 JSONL") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON ({exc.msg}): {_FORMAT_HINT}") from None
        task = _parse_task(obj, where, len(tasks), origin)
        if task.id in seen:
            raise ConfigError(f"{where}: duplicate id {task.id!r}: give every task a unique id")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise ConfigError(f"{path}: no tasks in the file ({config_field}): add at least one task")
    return tasks


def load_seed_tasks(path: str | None) -> list[Task]:
    return load_tasks(Path(path) if path else bundled_path(BUNDLED_SEEDS))


def load_heldout_tasks(path: str | None) -> list[Task]:
    return load_tasks(
        Path(path) if path else bundled_path(BUNDLED_HELDOUT), origin="heldout", config_field="seeds.heldout_path"
    )
