"""The run store wing is the one owner of SQL (issue 24): no module outside ``sedi/store/`` (nor a script) runs a
statement or spells one, and no query spells a word of the run's vocabulary (``base.vocabulary``) inside its SQL: the
words travel as parameters, so renaming one is a change in one place that mypy checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

from sedi.base import vocabulary as _types

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "sedi" / "store"
_RUNS_SQL = {"execute", "executemany", "executescript"}
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|ALTER|DROP) ")
_WORDS = {
    word
    for alias in (_types.VerdictName, _types.RequestKind, _types.RoundStage, _types.SeedAction, _types.CallStatus)
    for word in get_args(alias)
} | {_types.UNJUDGED, _types.LENGTH}


def _modules(*where: Path) -> list[Path]:
    return sorted(p for folder in where for p in folder.rglob("*.py"))


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant, with the parts of an f-string joined (their holes left empty)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def test_only_the_store_wing_runs_or_spells_sql() -> None:
    found = []
    for path in _modules(ROOT / "sedi", ROOT / "scripts"):
        if path.is_relative_to(STORE):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _RUNS_SQL:
                found.append(f"{where}:{node.lineno}: .{node.func.attr}(")
        found += [f"{where}:{line}: {text.strip()[:60]!r}" for line, text in _strings(tree) if _SQL.match(text)]
    assert found == [], "SQL outside sedi/store/ (move it into a named query of the store wing):\n" + "\n".join(found)


def test_store_queries_pass_the_vocabulary_as_parameters() -> None:
    assert {"kept", "tasks", "done", "promote", "interrupted"} <= _WORDS  # the check below has words to look for
    spelled = re.compile(r"'(" + "|".join(sorted(_WORDS)) + r")'")
    found = []
    for path in _modules(STORE):
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            word = spelled.search(text)
            if word is not None and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES)\b", text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {word.group(0)}")
    assert found == [], (
        "vocabulary spelled inside SQL (pass the sedi.base.vocabulary value as a ? parameter):\n" + "\n".join(found)
    )
