"""``sedi init``: a commented config to start from, and a small example seed file beside it.

The config is generated from the pydantic models (:class:`sedi.config.SediConfig` and its sections): every key
in field order, its ``Field(description=...)`` as the comment above it, its default as the value, so the file
cannot drift from the code. Only what a teacher kind needs beyond the defaults, and a few notes on what to do
next, are written here by hand.
"""

from __future__ import annotations

import csv
import io
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from sedi._io import fsync_write
from sedi.config import SediConfig
from sedi.exceptions import ConfigError

CONFIG_NAME = "sedi.yaml"
SEEDS_NAME = "seeds.example.csv"
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
            "base_url": "https://api.openai.com/v1",
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
        f"defaults, except seeds.path and what the {kind} teacher needs. A key left out takes its default, so you "
        "may delete what you do not change; an unknown key is an error.",
        f"Check it with `sedi config show {config_path}`, then start with `sedi run {config_path} --run-dir "
        "runs/mine` (--set key=value changes one key for one run). Relative paths are read from the directory "
        "you run sedi in.",
    ]


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
        dotted, value, section = prefix + name, values[name], _section_model(info.annotation)
        if depth == 0 and out:
            out.append("")
        out += _comment(pad, notes.get(dotted, []))
        out += _comment(pad, [info.description or ""])
        if section is not None and isinstance(value, dict):
            out += [f"{pad}{name}:", *_keys(section, value, depth + 1, notes, dotted + ".")]
            continue
        out.append(f"{pad}{name}: {_value(value)}")
        if section is not None:  # an optional section left unset (teacher.prices): its keys, ready to uncomment
            example = [f"{name}:", *_keys(section, section().model_dump(mode="json"), 1, {}, dotted + ".")]
            out += [f"{pad}# To set it, replace the line above with:", *(f"{pad}# {line}" for line in example)]
    return out


def render_config(kind: str, config_path: str = CONFIG_NAME, seeds_path: str = SEEDS_NAME) -> str:
    """The commented config for a teacher kind ('local', 'openai' or 'vllm'), its seeds at ``seeds_path``."""
    if kind not in TEACHERS:
        raise ConfigError(f"--teacher {kind!r}: use one of {', '.join(TEACHERS)}")
    teacher, teacher_notes = TEACHERS[kind]
    data = SediConfig().model_dump(mode="json")
    data["teacher"].update(teacher)
    data["seeds"]["path"] = seeds_path
    values = SediConfig.model_validate(data).model_dump(mode="json")  # what the file loads as, normalised
    notes = {"teacher": teacher_notes, **_seed_notes(seeds_path)}
    lines = [*_comment("", _header(kind, config_path)), "", *_keys(SediConfig, values, 0, notes)]
    return "\n".join(lines) + "\n"


def example_seeds_csv() -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("instruction", "input", "output"))
    writer.writerows(EXAMPLE_SEEDS)
    return buffer.getvalue()


def write_start(directory: Path, kind: str, *, force: bool = False) -> list[str]:
    """Write ``directory/sedi.yaml`` (refused if it exists, unless ``force``) and, unless it exists (it may hold
    your tasks by now), ``directory/seeds.example.csv``. Returns one line per file for the user."""
    config_path, seeds_path = directory / CONFIG_NAME, directory / SEEDS_NAME
    text = render_config(kind, str(config_path), str(seeds_path))
    if (config_path.exists() or config_path.is_symlink()) and not force:
        raise ConfigError(f"{config_path}: already exists: pass --force to overwrite it, or init another directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fsync_write(config_path, text)
        kept = seeds_path.exists()
        if not kept:
            fsync_write(seeds_path, example_seeds_csv())
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write there ({exc.strerror}): choose a writable directory") from None
    seeds_line = (
        f"kept {seeds_path} (it exists)" if kept else f"wrote {seeds_path} ({len(EXAMPLE_SEEDS)} example tasks)"
    )
    return [
        f"wrote {config_path} (teacher: {kind})",
        seeds_line,
        f"next: replace the example tasks with your own, then `sedi config show {config_path}` and "
        f"`sedi run {config_path} --run-dir runs/mine`",
    ]
