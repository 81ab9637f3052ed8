"""The two test tiers stay honest: a test that starts a Python process or loads a bundled model carries the
``slow`` marker, so ``pytest -m "not slow"`` (the fast tier .ci/run runs first) never waits on one.

A static scan (ast) of the test modules, not a run: a test is found slow when its body, a function or fixture of
its module it names, or a helper it imports from ``tests/`` refers to ``sys.executable`` (``python -m sedi``, a
script, ``python -c``), to ``multiprocessing``, to the bundled Gemma or to the real sentence-transformers
``Encoder`` (the bundled MiniLM). Tests that use a fixture in ``tests.conftest.SLOW_FIXTURES`` are marked by
conftest's collection hook and need no decorator. What the scan cannot see is marked by its measured duration:
a test that took 3 s or more (setup included) in `pytest -m "not slow" --durations=0` on the shared 2-core machine,
about 1.3 s on an idle one: a full loop in-process, a training round, processes sedi starts (experiment.parallel,
the multi-process trainer), plots.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import SLOW_FIXTURES

TESTS = Path(__file__).parent
# Names whose use means a process start or a real model: each costs seconds (a Python child imports torch,
# transformers and sedi before it does anything; the Gemma loads 270M weights; diversity's Encoder loads MiniLM
# through sentence-transformers and converts it to OpenVINO).
SLOW_NAMES = {"BUNDLED_MODEL_NAME", "bundled_model_dir", "Encoder"}
SLOW_ATTRIBUTES = {("sys", "executable")}
SLOW_MODULES = {"multiprocessing"}


def _is_slow_mark(node: ast.expr) -> bool:
    """``pytest.mark.slow``, called or not."""
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node) == "pytest.mark.slow"


def _module_marked(tree: ast.Module) -> bool:
    """Whether ``pytestmark`` at module level is, or lists, ``pytest.mark.slow``."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            return any(_is_slow_mark(mark) for mark in marks)
    return False


def _uses_directly(function: ast.FunctionDef) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and (node.id in SLOW_NAMES or node.id in SLOW_MODULES):
            return True
        owner = node.value.id if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) else ""
        if owner and ((owner, node.attr) in SLOW_ATTRIBUTES or owner in SLOW_MODULES):  # type: ignore[attr-defined]
            return True
    return False


def _referenced(function: ast.FunctionDef) -> set[str]:
    """Every name a function reads, its parameters included (a fixture is named by a parameter)."""
    names = {node.id for node in ast.walk(function) if isinstance(node, ast.Name)}
    return names | {arg.arg for arg in function.args.args + function.args.kwonlyargs}


@cache
def slow_functions(module: str) -> frozenset[str]:
    """Top-level functions and fixtures of ``tests/<module>.py`` that start a process or load the bundled Gemma,
    directly or through another one (of this module, or imported from another module under ``tests/``)."""
    tree = ast.parse((TESTS / f"{module}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests."):
            source = node.module.removeprefix("tests.")  # type: ignore[union-attr]
            imported |= {alias.asname or alias.name for alias in node.names if alias.name in slow_functions(source)}
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    slow = {name for name, function in functions.items() if _uses_directly(function)} | imported
    while True:  # to a fixed point: a function that names a slow one is slow
        more = {name for name, function in functions.items() if name not in slow and _referenced(function) & slow}
        if not more:
            return frozenset(slow)
        slow |= more


def unmarked_slow_tests(path: Path) -> list[str]:
    """The tests of one module that the scan finds slow but that carry no ``slow`` marker."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if _module_marked(tree):
        return []
    slow = slow_functions(path.stem)
    return [
        f"{path.name}::{node.name}"
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test") and node.name in slow
        if not any(_is_slow_mark(d) for d in node.decorator_list) and not _referenced(node) & SLOW_FIXTURES
    ]


def test_every_test_that_starts_a_process_or_loads_a_bundled_model_is_marked_slow() -> None:
    unmarked = [test for path in sorted(TESTS.glob("test_*.py")) for test in unmarked_slow_tests(path)]
    assert not unmarked, "mark these @pytest.mark.slow (see tests/test_tiers.py): " + ", ".join(unmarked)


def test_the_scan_sees_the_ways_a_test_starts_a_process() -> None:
    # The helper that runs `python -m sedi`, a fixture that loads the bundled Gemma, and a test module that does both.
    assert {"sedi", "status"} <= slow_functions("helpers")
    assert slow_functions("conftest") == SLOW_FIXTURES  # conftest's hook marks exactly the fixtures that load it
    assert {"test_kill_9_mid_generation_then_resume"} <= slow_functions("test_run_e2e")
