"""Reading a YAML config file: one-line errors naming the file, and no key given twice. Apart from
:mod:`sedi.config.model` (which re-exports :func:`read_config_file`) so that each config module stays small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sedi.exceptions import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain YAML keeps the
    last silently, and a second ``method:`` further down once turned a run into another method."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in first:
                raise ConfigError(
                    f"duplicate key '{key}' at lines {first[key]} and {line}: keep one (YAML would keep the last)"
                )
            first.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors naming the file."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file: pass the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found: check the path, or omit it to use the defaults")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}: fix the syntax (indentation, colons, quotes)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file: pass a YAML config file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data
