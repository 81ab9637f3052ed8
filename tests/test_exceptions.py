"""The exception tree as a contract: what sedi.exceptions documents is what the package defines, exports and
raises, so no documented error is dead (as a parse error once was) and no error escapes the tree unnoticed."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import sedi
from sedi import exceptions

ROOT = Path(__file__).resolve().parents[1]


def _defined() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(exceptions).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__
    }


def _constructed_names() -> set[str]:
    """Names of the classes that code in sedi/ (outside the tree itself) calls: an error is built where it is
    raised, or built and returned to be raised by the caller (the budget's refusal is)."""
    names: set[str] = set()
    for path in (ROOT / "sedi").rglob("*.py"):
        if path.name == "exceptions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def test_the_documented_tree_is_the_defined_tree_with_its_parents() -> None:
    documented = set(re.findall(r"\b(\w+(?:Error|Exceeded|Unreachable))\b", exceptions.__doc__ or ""))
    defined = _defined()
    assert documented == set(defined)
    assert sorted(exceptions.__all__) == sorted(defined)
    for name, cls in defined.items():
        assert name == "SediError" or issubclass(cls, exceptions.SediError), name
    # nesting as drawn: TeacherUnreachable sits under TeacherError
    assert issubclass(exceptions.TeacherUnreachable, exceptions.TeacherError)


def test_every_documented_error_is_built_somewhere_in_the_package() -> None:
    built = _constructed_names()
    never = {name for name in _defined() if name != "SediError" and name not in built}
    assert not never, f"documented but never raised: {sorted(never)}"


def test_the_package_exports_the_tree() -> None:
    for name in exceptions.__all__:
        assert getattr(sedi, name) is getattr(exceptions, name)
