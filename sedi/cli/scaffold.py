"""``sedi init``: a commented config to start from, and a small example seed file beside it.

The config is generated from the pydantic models (:class:`sedi.config.model.SediConfig` and its sections): every key
in field order, its ``Field(description=...)`` as the comment above it, its default as the value, so the file
cannot drift from the code. Only what a teacher kind needs beyond the defaults, and a few notes on what to do
next, are written here by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from sedi.base.files import fsync_write
from sedi.config.model import SediConfig
from sedi.config.seeds import Task, load_tasks
from sedi.exceptions import ConfigError

CONFIG_NAME = "sedi.yaml"
SEEDS_NAME = "seeds.example.csv"
SPLIT_SEEDS, SPLIT_HELDOUT = "seeds.jsonl", "heldout.jsonl"  # `sedi init --seeds FILE` writes these
# The user's own held-out set: 10% of their tasks, at least 5 (fewer gives a loss too noisy to compare rounds), and
# only from 25 tasks up, so that 20 or more stay seeds (a prompt shows 6 of them). Picked with a fixed seed.
HELDOUT_SHARE, HELDOUT_MIN, SPLIT_FROM = 0.10, 5, 25
# A remote teacher's rounds: each of the teacher.concurrency request slots makes this many calls per round. A
# round's training and held-out evaluation take minutes whatever its calls (8 minutes in a measured 4-call round:
# 3.5 training, 4.5 evaluation), so 4 calls a round spent most of a run not generating.
CALLS_PER_SLOT = 5
WIDTH = 100  # comment text per line, indentation included

# A runnable start, not a recommendation: one task without input, two with, one answer over several lines.
EXAMPLE_SEEDS = (
    (
        "Give three tips for staying healthy.",
        "",
        "1. Eat a balanced diet with plenty of fruit and vegetables.\n2. Move for at least 30 minutes a day.\n"
        "3. Sleep seven to nine hours a night.",
    ),
    (
        "Classify the sentiment of the review as positive or negative.",
        "The battery died after two days, and support never answered.",
        "negative",
    ),
    (
        "Rewrite the sentence in the passive voice.",
        "The committee approved the new budget.",
        "The new budget was approved by the committee.",
    ),
)

_OPENAI_NOTES = [
    "A paid OpenAI-compatible API. Export your key first (export OPENAI_API_KEY=...); sedi reads it from the "
    "variable named by teacher.api_key_env and never writes it anywhere.",
    "teacher.base_url is left unset, so $OPENAI_BASE_URL is used if set, else https://api.openai.com/v1; set it "
    "(or `sedi init --base-url URL`) for another provider.",
    "At a non-loopback base_url, teacher.prices (USD per million tokens; those below are gpt-4o-mini's, check "
    "your provider's) or teacher.free: true is required: without either the run stops before its first request.",
]
_VLLM_NOTES = [
    "Your own vLLM server. Start its OpenAI-compatible server first, on this machine, e.g. "
    "`vllm serve Qwen/Qwen2.5-7B-Instruct --host 127.0.0.1 --port 8000`, and set teacher.model to the name it "
    "serves (the model argument, or --served-model-name).",
    "The URL is loopback, so no API key and no prices are needed (the cost is reported as unknown, never $0). "
    "On another machine, use its URL and set teacher.free: true (or teacher.prices).",
]
_LOCAL_NOTES = [
    "The embedded teacher: `sedi run` serves the bundled Gemma-3-270m base model (or teacher.local.model) on a "
    "free loopback port for the run and stops it after; no key, no cost, a CPU is enough.",
    "For a stronger teacher: `sedi init --teacher openai` (a paid API) or `--teacher vllm` (your own server).",
]
# What each --teacher kind sets beyond the defaults, and the notes above its teacher section.
TEACHERS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "local": ({}, _LOCAL_NOTES),
    "openai": (
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "mode": "chat",
            "api_key_env": "OPENAI_API_KEY",
            "prices": {"prompt": 0.15, "completion": 0.60},
        },
        _OPENAI_NOTES,
    ),
    "vllm": (
        {
            "provider": "openai",
            "base_url": "http://127.0.0.1:8000/v1",
            "model": "Qwen/Qwen2.5-7B-Instruct",
            "mode": "chat",
        },
        _VLLM_NOTES,
    ),
}


def _header(kind: str, config_path: str) -> list[str]:
    return [
        f"sedi config written by `sedi init --teacher {kind}`: every key with its help text; the values are the "
        f"defaults, except the seeds{'' if kind == 'local' else ', the rounds'} and what the {kind} teacher needs. "
        "A key left out takes its default, so you "
        "may delete what you do not change; an unknown key is an error.",
        f"Check it with `sedi config show {config_path}`, then start with `sedi run {config_path} --run-dir "
        "runs/mine` (--set key=value changes one key for one run). Relative paths are read from the directory "
        "you run sedi in.",
    ]


def _remote_rounds(data: dict[str, Any]) -> dict[str, list[str]]:
    """Size the rounds of a remote teacher so that the run ends at its target or its budget, not its round cap;
    returns the notes that state the rule above the two keys."""
    per_round = CALLS_PER_SLOT * data["teacher"]["concurrency"]
    calls = max(data["budget"]["max_calls"] or 0, data["generation"]["target_kept"])
    data["generation"]["calls_per_round"], data["run"]["max_rounds"] = per_round, math.ceil(calls / per_round)
    return {
        "generation.calls_per_round": [
            f"Written by sedi init for a remote teacher: {CALLS_PER_SLOT} x teacher.concurrency, so that a round's "
            "fixed minutes of training and evaluation are shared by many calls (the default 4 is the embedded run's)."
        ],
        "run.max_rounds": [
            "Written by sedi init for a remote teacher: ceil(max(budget.max_calls, generation.target_kept) / "
            "generation.calls_per_round), so that the run ends at its target or its budget, not here."
        ],
    }


def _seed_notes(seeds_path: str) -> dict[str, list[str]]:
    return {
        "seeds.path": [
            f"{seeds_path} holds 3 example tasks so that this config runs as it is: replace them with your own, "
            "50 or more, in CSV (columns instruction, input, output) or JSONL, and point this key at the file.",
        ],
        "seeds.heldout_path": [
            "Put held-out tasks from your own domain in a file beside your seeds (same format, never the same "
            "tasks) and point this key at it, so that the student is measured on what you care about.",
        ],
    }


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Prices | None`` holds ``Prices``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((m for arg in typing.get_args(annotation) if (m := _section_model(arg)) is not None), None)
    return None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a list field's items (``list[PromptShape]``, also ``| None``), else None."""
    if typing.get_origin(annotation) is not list:
        lists = [arg for arg in typing.get_args(annotation) if typing.get_origin(arg) is list]
        return _item_model(lists[0]) if lists else None
    return _section_model(typing.get_args(annotation)[0])


def _value(value: Any) -> str:
    """One YAML value on one line: plain where YAML allows it, else a double-quoted string with escapes."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_value(item)}" for key, item in value.items()) + "}"
    text = yaml.safe_dump(value, width=10**6, allow_unicode=True).removesuffix("\n...\n").removesuffix("\n")
    if "\n" in text:
        return yaml.safe_dump(value, default_style='"', width=10**6).strip()  # e.g. "\n\n\n", escaped
    return text


def _comment(pad: str, paragraphs: list[str]) -> list[str]:
    width = max(40, WIDTH - len(pad) - 2)
    wrap = textwrap.TextWrapper(width, break_long_words=False, break_on_hyphens=False)
    return [f"{pad}# {line}" for text in paragraphs for line in wrap.wrap(text)]


def _keys(
    model: type[BaseModel], values: dict[str, Any], depth: int, notes: dict[str, list[str]], prefix: str = ""
) -> list[str]:
    """The YAML lines of one section: for each field its notes (if any), its help text, then the key."""
    pad, out = "  " * depth, list[str]()
    for name, info in model.model_fields.items():
        if info.exclude:  # not a config key (student.train.seed follows run.seed)
            continue
        dotted, value, section = prefix + name, values[name], _section_model(info.annotation)
        if depth == 0 and out:
            out.append("")
        out += _comment(pad, notes.get(dotted, []))
        out += _comment(pad, [info.description or ""])
        if section is not None and isinstance(value, dict):
            out += [f"{pad}{name}:", *_keys(section, value, depth + 1, notes, dotted + ".")]
            continue
        out.append(f"{pad}{name}: {_value(value)}")
        item = _item_model(info.annotation)
        if item is not None and value and isinstance(value[0], dict):  # a list of sections: document their keys
            keys = _keys(item, value[0], 1, {}, dotted + "[].")
            out += [f"{pad}# Each item's keys, with the first item's values:", *(f"{pad}# {line}" for line in keys)]
        elif item is not None and value is None:  # a list left unset (derived): its items' keys, with defaults
            keys = _keys(item, item().model_dump(mode="json"), 1, {}, dotted + "[].")
            out += [
                f"{pad}# To list them, each item's keys, with their defaults:",
                *(f"{pad}# {line}" for line in keys),
            ]
        if section is not None:  # an optional section left unset (teacher.prices): its keys, ready to uncomment
            example = [f"{name}:", *_keys(section, section().model_dump(mode="json"), 1, {}, dotted + ".")]
            out += [f"{pad}# To set it, replace the line above with:", *(f"{pad}# {line}" for line in example)]
    return out


def _split_notes(seeds_path: str, heldout_path: str, source: Path, seeds: int, heldout: int) -> dict[str, list[str]]:
    return {
        "seeds.path": [f"{seeds_path}: {seeds} of your tasks from {source}; the other {heldout} are held out."],
        "seeds.heldout_path": [
            f"{heldout_path}: {heldout} of your tasks from {source} ({HELDOUT_SHARE:.0%}, at least {HELDOUT_MIN}, "
            "picked at random with seed 0), never used as seeds: the student is measured on your own kind of task."
        ],
    }


def render_config(
    kind: str,
    config_path: str = CONFIG_NAME,
    seeds_path: str = SEEDS_NAME,
    *,
    base_url: str | None = None,
    heldout_path: str | None = None,
    seed_notes: dict[str, list[str]] | None = None,
) -> str:
    """The commented config for a teacher kind ('local', 'openai' or 'vllm'), its seeds at ``seeds_path``."""
    if kind not in TEACHERS:
        raise ConfigError(f"--teacher {kind!r}: use one of {', '.join(TEACHERS)}")
    if kind == "local" and base_url is not None:
        raise ConfigError("--base-url: the local teacher is served by sedi itself: use --teacher openai or vllm")
    teacher, teacher_notes = TEACHERS[kind]
    data = SediConfig().model_dump(mode="json")
    data["teacher"].update(teacher)
    data["teacher"]["base_url"] = base_url or data["teacher"]["base_url"]
    data["seeds"]["path"], data["seeds"]["heldout_path"] = seeds_path, heldout_path
    rounds = {} if kind == "local" else _remote_rounds(data)  # the embedded demo keeps its small defaults
    values = SediConfig.model_validate(data).model_dump(mode="json")  # what the file loads as, normalised
    notes = {"teacher": teacher_notes, **(seed_notes or _seed_notes(seeds_path)), **rounds}
    lines = [*_comment("", _header(kind, config_path)), "", *_keys(SediConfig, values, 0, notes)]
    return "\n".join(lines) + "\n"


def example_seeds_csv() -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("instruction", "input", "output"))
    writer.writerows(EXAMPLE_SEEDS)
    return buffer.getvalue()


def split_heldout(tasks: list[Task]) -> tuple[list[Task], list[Task]]:
    """(seeds, held-out): HELDOUT_SHARE of the tasks (at least HELDOUT_MIN) held out, each list in file order;
    no split below SPLIT_FROM tasks."""
    if len(tasks) < SPLIT_FROM:
        return tasks, []
    order = list(range(len(tasks)))
    random.Random(0).shuffle(order)
    held = set(order[: max(HELDOUT_MIN, round(len(tasks) * HELDOUT_SHARE))])
    return [t for i, t in enumerate(tasks) if i not in held], [t for i, t in enumerate(tasks) if i in held]


def _jsonl(tasks: list[Task]) -> str:
    rows = ({"id": t.id, "instruction": t.instruction, "input": t.input, "output": t.output} for t in tasks)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _your_seeds(directory: Path, source: Path) -> tuple[dict[Path, str], dict[str, Any], list[str]]:
    """The files, render_config arguments and lines for ``--seeds``: the split, or the file as it is when small."""
    seeds, heldout = split_heldout(load_tasks(source, config_field="--seeds"))
    if not heldout:
        why = f"{len(seeds)} tasks: fewer than {SPLIT_FROM}, so none is held out (the shipped held-out tasks are used)"
        return {}, {"seeds_path": str(source), "seed_notes": {"seeds.path": [f"{source}: your tasks."]}}, [why]
    seeds_path, heldout_path = directory / SPLIT_SEEDS, directory / SPLIT_HELDOUT
    for path in (seeds_path, heldout_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: already exists (a seed file is never overwritten): remove it or init elsewhere")
    notes = _split_notes(str(seeds_path), str(heldout_path), source, len(seeds), len(heldout))
    args = {"seeds_path": str(seeds_path), "heldout_path": str(heldout_path), "seed_notes": notes}
    lines = [f"wrote {seeds_path} ({len(seeds)} of your tasks)", f"wrote {heldout_path} ({len(heldout)} held out)"]
    return {seeds_path: _jsonl(seeds), heldout_path: _jsonl(heldout)}, args, lines


def write_start(
    directory: Path, kind: str, *, force: bool = False, base_url: str | None = None, seeds: Path | None = None
) -> list[str]:
    """Write ``directory/sedi.yaml`` (refused if it exists, unless ``force``) and, unless it exists (it may hold
    your tasks by now), ``directory/seeds.example.csv``; with ``seeds``, instead your tasks split into seeds and a
    held-out set (see :func:`split_heldout`), neither file ever overwritten. Returns one line per file."""
    config_path, seeds_path = directory / CONFIG_NAME, directory / SEEDS_NAME
    files, args, seed_lines = _your_seeds(directory, seeds) if seeds is not None else ({}, {}, [])
    text = render_config(kind, str(config_path), **{"seeds_path": str(seeds_path), **args}, base_url=base_url)
    if (config_path.exists() or config_path.is_symlink()) and not force:
        raise ConfigError(f"{config_path}: already exists: pass --force to overwrite it, or init another directory")
    kept = seeds is not None or seeds_path.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, body in files.items():
            fsync_write(path, body)
        fsync_write(config_path, text)
        if not kept:
            fsync_write(seeds_path, example_seeds_csv())
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write there ({exc.strerror}): choose a writable directory") from None
    if seeds is None:
        seed_lines = [
            f"kept {seeds_path} (it exists)" if kept else f"wrote {seeds_path} ({len(EXAMPLE_SEEDS)} example tasks)"
        ]
    return [
        f"wrote {config_path} (teacher: {kind})",
        *seed_lines,
        ("next: " if seeds is not None else "next: replace the example tasks with your own, then ")
        + f"`sedi config show {config_path}` and `sedi run {config_path} --run-dir runs/mine`",
    ]
