"""Task files: the bundled seed and held-out sets, or a user's JSONL or CSV, validated line by line.

CSV (by the ``.csv`` extension) is read with the standard library's ``csv`` module, which handles quoting,
commas and line breaks inside fields as spreadsheets write them; the first line must name the columns. JSONL
needs the ``.jsonl`` extension; any other is refused rather than guessed (a ``.txt`` was once read as JSONL).

Every row is checked before a request: at most ``seeds.max_chars`` characters (instruction + input + output),
no control character (NUL and the other C0 codes except tab and line breaks: they come from binary files or
broken exports and no tokenizer treats them as text), and no row identical to an earlier one (it would be shown
in prompts twice as often). Such a file is refused with the line to fix, never silently cleaned: a seed file is
small and the user's, and a dropped row would change the run without a word.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sedi.base.vocabulary import TaskOrigin
from sedi.config.model import SeedsConfig
from sedi.exceptions import ConfigError

BUNDLED_SEEDS = "seed_tasks.jsonl"
BUNDLED_HELDOUT = "user_oriented_instructions.jsonl"
SUFFIXES = (".jsonl", ".csv")
# The default of seeds.max_chars, taken from the config model (which imports nothing from the code it configures;
# see sedi.config.model.SeedsConfig for the measured reason), for the loaders' callers that have no config.
MAX_TASK_CHARS: int = SeedsConfig.model_fields["max_chars"].default
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The csv module refuses a field over 131,072 characters with its own error ("field larger than field limit"),
# which reads as a quoting problem: lift that limit (the text is in memory already) so that seeds.max_chars,
# checked on every row, is the one that speaks.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
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


CSV_COLUMNS = ("id", "instruction", "input", "output")  # 'instruction' and 'output' required; 'id', 'input' optional
_CSV_HEADER = "the first line must name the columns, e.g. instruction,input,output"
_CSV_QUOTE = 'put a field holding a comma or a line break in double quotes, and write a quote inside it twice ("")'


def _read_text(path: Path, config_field: str, kind: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{path}: task file not found ({config_field}): fix the path or unset {config_field}")
    try:
        # utf-8-sig: editors on Windows save JSONL and CSV with a byte-order mark, which is not part of the data.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text ({config_field}): save it as UTF-8 {kind}") from None


def _jsonl_tasks(path: Path, text: str, origin: TaskOrigin) -> list[tuple[str, Task]]:
    out: list[tuple[str, Task]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            obj = json.loads(line, strict=False)  # a control character is reported by name below, not as bad JSON
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON ({exc.msg}): {_FORMAT_HINT}") from None
        out.append((where, _parse_task(obj, where, len(out), origin)))
    return out


def _csv_header(where: str, header: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    for name in columns:
        # Other columns (notes, categories) are ignored as JSONL ignores other fields, but not a likely typo.
        near = difflib.get_close_matches(name, CSV_COLUMNS, n=1, cutoff=0.75)
        if name not in CSV_COLUMNS and near:
            raise ConfigError(f"{where}: unknown column '{name}': rename it '{near[0]}' ({_CSV_HEADER})")
        if name in CSV_COLUMNS and columns.count(name) > 1:
            raise ConfigError(f"{where}: column '{name}' appears twice: keep one ({_CSV_HEADER})")
    for required in ("instruction", "output"):  # as in JSONL, where 'output' may be empty but not absent
        if required not in columns:
            raise ConfigError(f"{where}: no column '{required}' (header: {', '.join(columns)}): {_CSV_HEADER}")
    return columns


def _csv_tasks(path: Path, text: str, origin: TaskOrigin) -> list[tuple[str, Task]]:
    # strict: an unclosed quote is an error instead of swallowing the rest of the file into one field.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[tuple[str, Task]] = []
    columns: list[str] | None = None
    start = 1
    try:
        for row in reader:
            where, start = f"{path}: line {start}", reader.line_num + 1  # a quoted field may span lines
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _csv_header(where, row)
                continue
            if len(row) != len(columns):
                raise ConfigError(
                    f"{where}: {len(row)} values but the header names {len(columns)} columns "
                    f"({', '.join(columns)}): {_CSV_QUOTE}"
                )
            values = {name: cell for name, cell in zip(columns, row, strict=True) if name in CSV_COLUMNS}
            instruction = values["instruction"].strip()
            if not instruction:
                raise ConfigError(f"{where}: column 'instruction' is empty: give every task an instruction")
            task_id = values.get("id", "").strip() or f"{origin}-{len(out)}"  # as JSONL lines without an id
            task = Task(task_id, instruction, values.get("input", "").strip(), values.get("output", "").strip(), origin)
            out.append((where, task))
    except csv.Error as exc:
        raise ConfigError(f"{path}: line {start}: malformed CSV ({exc}): {_CSV_QUOTE}") from None
    return out


def _check_row(where: str, task: Task, max_chars: int) -> None:
    size = len(task.instruction) + len(task.input) + len(task.output)
    if size > max_chars:
        raise ConfigError(
            f"{where}: the task is {size:,} characters (instruction + input + output), over seeds.max_chars "
            f"({max_chars:,}): shorten it, or raise seeds.max_chars if such long tasks are meant"
        )
    for name in ("instruction", "input", "output"):
        found = _CONTROL.search(getattr(task, name))
        if found:
            code = f"U+{ord(found.group()):04X}"
            raise ConfigError(
                f"{where}: field '{name}' holds the control character {code} at character {found.start() + 1}: "
                "remove it (save the file as plain UTF-8 text)"
            )


def load_tasks(
    path: Path, *, origin: TaskOrigin = "human", config_field: str = "seeds.path", max_chars: int = MAX_TASK_CHARS
) -> list[Task]:
    """Read and validate a task file: CSV if its name ends in ``.csv``, JSONL if in ``.jsonl``. Errors name the
    file, the line, the field or column, and the fix; rows are checked as the module docstring says."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in SUFFIXES:
        raise ConfigError(
            f"{path}: unknown extension '{suffix or '(none)'}' ({config_field}): name it .jsonl (one JSON object "
            "per line) or .csv (a header line naming the columns, then one task per row)"
        )
    is_csv = suffix == ".csv"
    text = _read_text(path, config_field, "CSV" if is_csv else "JSONL")
    parsed = _csv_tasks(path, text, origin) if is_csv else _jsonl_tasks(path, text, origin)
    seen: set[str] = set()
    rows: dict[tuple[str, str, str], str] = {}
    for where, task in parsed:
        if task.id in seen:
            raise ConfigError(f"{where}: duplicate id {task.id!r}: give every task a unique id")
        seen.add(task.id)
        _check_row(where, task, max_chars)
        earlier = rows.setdefault((task.instruction, task.input, task.output), where)
        if earlier != where:
            line = earlier.rsplit(": ", 1)[-1]
            raise ConfigError(f"{where}: the same task as {line} (instruction, input and output): remove one")
    if not parsed:
        raise ConfigError(f"{path}: no tasks in the file ({config_field}): add at least one task")
    return [task for _, task in parsed]


def load_seed_tasks(path: str | None, max_chars: int = MAX_TASK_CHARS) -> list[Task]:
    return load_tasks(Path(path) if path else bundled_path(BUNDLED_SEEDS), max_chars=max_chars)


def load_heldout_tasks(path: str | None, max_chars: int = MAX_TASK_CHARS) -> list[Task]:
    return load_tasks(
        Path(path) if path else bundled_path(BUNDLED_HELDOUT),
        origin="heldout",
        config_field="seeds.heldout_path",
        max_chars=max_chars,
    )
