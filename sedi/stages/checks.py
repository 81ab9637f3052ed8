"""Checks of the models a config names, before a run spends anything.

A run pays the teacher first and loads the student and the sentence encoder only later, so a mistyped
model path used to surface as a library traceback after the first round was paid for. These checks look
only at files (no model is loaded, nothing is converted or downloaded), so they take milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from sedi.config.model import SediConfig
from sedi.exceptions import ConfigError
from sedi.serve import BUNDLED_MODEL_NAME, cache_dir  # cheap: sedi.serve imports torch only on use

_TRANSFORMERS = "a directory holding a transformers model (config.json, weights, tokenizer)"


def _model_dir(source: str, key: str, value: str, need: tuple[str, ...], what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{source}: field '{key}' is {value!r}: no such directory: give {what}")
    if not any((path / name).is_file() for name in need):
        raise ConfigError(f"{source}: field '{key}' is {value!r}: no {' or '.join(need)} there: give {what}")
    return path


def has_chat_template(model_dir: Path) -> bool:
    """What transformers' tokenizer would report, read from the files: a ``chat_template`` in
    tokenizer_config.json, or a separate chat_template.jinja / chat_template.json (newer transformers)."""
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def _bundled_dir() -> Path | None:
    """The converted bundled model if it exists already (never converts: that takes a minute)."""
    path = cache_dir() / "models" / BUNDLED_MODEL_NAME
    return path if (path / "tokenizer_config.json").is_file() else None


def check_models(config: SediConfig, source: str) -> None:
    """Every model the run will load exists and can do what the config asks of it."""
    student = config.student.model
    if student == BUNDLED_MODEL_NAME:
        student_dir = _bundled_dir()
    else:
        student_dir = _model_dir(
            source, "student.model", student, ("config.json",), f"'{BUNDLED_MODEL_NAME}' or {_TRANSFORMERS}"
        )
    # The bundled Gemma-3-270m is a base model without a chat template; its converted files, once they
    # exist, say so themselves.
    templated = student_dir is not None and has_chat_template(student_dir)
    if config.student.train.chat is True and not templated:
        raise ConfigError(
            f"{source}: field 'student.train.chat' is true but student.model {student!r} has no chat template "
            "(none in tokenizer_config.json, no chat_template.jinja): set student.train.chat to auto or false"
        )
    embedder = config.filter.embedding_model
    if embedder is not None:
        what = "a sentence-transformers model directory (modules.json or config.json), or unset it for the bundled one"
        _model_dir(source, "filter.embedding_model", embedder, ("modules.json", "config.json"), what)
    if config.filter.embedding_backend == "openvino":
        _check_openvino(source, embedder)
    teacher = config.teacher.local.model
    if config.teacher.provider == "local" and teacher != BUNDLED_MODEL_NAME:
        what = f"'{BUNDLED_MODEL_NAME}' or {_TRANSFORMERS}"
        _model_dir(source, "teacher.local.model", teacher, ("config.json",), what)


def _check_openvino(source: str, embedder: str | None) -> None:
    """``filter.embedding_backend: openvino`` can run: the package is there and the model is one it converts."""
    from diversity.embeddings import default_model_path, openvino_available, unsupported_files_reason

    key = "field 'filter.embedding_backend' is 'openvino'"
    if not openvino_available():
        raise ConfigError(f"{source}: {key} but openvino is not installed: pip install openvino, or set it to auto")
    reason = unsupported_files_reason(Path(embedder).expanduser() if embedder else default_model_path())
    if reason is not None:
        raise ConfigError(f"{source}: {key} but filter.embedding_model cannot run on it ({reason}): set it to auto")
