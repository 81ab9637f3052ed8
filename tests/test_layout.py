"""The repository's layout contract, read from the source with ``ast`` (nothing is imported):

- test modules share code through ``tests/helpers.py`` and ``tests/conftest.py``, never by importing another
  test module, and never import ``scripts/``; scripts import the installed packages, never ``tests``, and never
  edit the import path (the ``path`` list of ``sys``);
- no module of ``sedi``, ``diversity`` or ``feedback`` is over 400 lines;
- the modules of those packages import each other without cycles, counting every import statement at any
  depth (inside functions and ``if TYPE_CHECKING:`` blocks too), and ``diversity`` and ``feedback`` import
  neither ``sedi`` nor each other;
- ``sedi``'s wings (its sub-packages) import only earlier wings in ``ORDER``: the inner wings (``WINGS``, from
  ``base`` to ``export``) never the top-level modules (``loop``, ``api``) but ``exceptions``; the outer wings
  (``experiment``, ``cli``) may also use the top level;
- ``pip install .`` ships the product only: pyproject's package patterns find exactly those three packages, and
  none of their modules imports the benchmark code (``scripts/benchmarks``), the scripts or the tests.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("sedi", "diversity", "feedback")
INDEPENDENT = ("diversity", "feedback")  # may import neither sedi nor each other
MAX_LINES = 400
# sedi's sub-packages, each importing only those before it: the embedded server stands alone; the config
# imports nothing it configures; the store, the teacher client, the loop's stages, the report and the export
# each build on the ones before.
WINGS = ("base", "serve", "config", "store", "teacher", "stages", "report", "export")
# Wings that tie the inner ones together and may use the top-level loop: the comparison of arms, then the command.
OUTER = ("experiment", "cli")
ORDER = (*WINGS, "!top", *OUTER)
# Top-level modules every wing may use: the typed vocabulary, exceptions, file writing, fault injection,
# the hardware probe and secret redaction. They import nothing else from sedi.
BASE = ("exceptions",)


@dataclass(frozen=True)
class Import:
    """One module named by an import statement, made absolute."""

    name: str
    line: int


def _package_of(module: str, is_init: bool) -> str:
    """The package a module's relative imports start from."""
    return module if is_init else module.rpartition(".")[0]


def imports(tree: ast.AST, module: str = "", is_init: bool = False) -> Iterator[Import]:
    """Every module an import statement anywhere in ``tree`` names, relative imports resolved against ``module``.
    ``from X import a`` yields ``X.a`` (a submodule, if it is one) and ``X``; the caller keeps what exists.
    ``importlib.import_module("X")`` and ``__import__("X")`` with a literal name count as ``import X``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = _package_of(module, is_init).split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield Import(base, node.lineno)
            yield from (Import(f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield Import(node.args[0].value, node.lineno)


def _is_import_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def import_path_edits(tree: ast.AST) -> list[int]:
    """Lines that change the import path: a call of a method on it (insert, append, ...), assignments to that list or
    its items, importing ``path`` from ``sys``, ``site.addsitedir`` and pytest's ``syspath_prepend``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_import_path(node.func.value) or node.func.attr in ("addsitedir", "syspath_prepend"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if _is_import_path(target) or (isinstance(target, ast.Subscript) and _is_import_path(target.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)
    return sorted(lines)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.py"))


def _names(folder: str, prefix: str) -> set[str]:
    return {path.stem for path in _files(folder) if path.stem.startswith(prefix)}


def test_tests_import_neither_other_test_modules_nor_scripts_nor_edit_the_import_path() -> None:
    test_modules = _names("tests", "test_")
    scripts = _names("scripts", "")
    assert "test_layout" in test_modules and scripts  # the scan sees the files
    offences = set()
    for path in _files("tests"):
        tree = _parse(path)
        for imported in imports(tree, f"tests.{path.stem}"):
            parts = imported.name.split(".")
            if parts[0] == "tests" and len(parts) > 1 and parts[1] in test_modules:
                offences.add(f"tests/{path.name}:{imported.line} imports tests.{parts[1]}")
            elif parts[0] in test_modules or parts[0] in scripts or parts[0] == "scripts":  # bare: via an edited path
                offences.add(f"tests/{path.name}:{imported.line} imports {parts[0]}")
        offences |= {f"tests/{path.name}:{line} edits the import path" for line in import_path_edits(tree)}
    assert not offences, "shared test code belongs in tests/helpers.py or tests/conftest.py:\n" + "\n".join(
        sorted(offences)
    )


def test_no_script_imports_the_tests_or_edits_the_import_path() -> None:
    test_files = _names("tests", "")
    assert _files("scripts")
    offences = set()
    for path in _files("scripts"):
        tree = _parse(path)
        for imported in imports(tree, f"scripts.{path.stem}"):
            top = imported.name.split(".")[0]
            if top == "tests" or top in test_files:
                offences.add(f"scripts/{path.name}:{imported.line} imports {top}")
        offences |= {f"scripts/{path.name}:{line} edits the import path" for line in import_path_edits(tree)}
    assert not offences, "scripts import the installed packages only:\n" + "\n".join(sorted(offences))


def package_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_no_package_module_is_over_400_lines() -> None:
    modules = package_modules()
    assert len(modules) > 30 and {"sedi", "diversity", "feedback"} <= set(modules)
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not too_long, f"split these modules (lines > {MAX_LINES}): {too_long}"


Graph = dict[str, dict[str, list[int]]]  # module -> imported module -> lines of the import statements


def import_graph(root: Path = REPO) -> Graph:
    """Edges between the packages' modules from every import statement. An import names the longest existing
    module its dotted name starts with; a module importing itself or one of its own parent packages adds no
    edge (Python initializes the parent first, so that import cannot form a cycle of its own)."""
    modules = package_modules(root)
    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        for imported in imports(_parse(path), name, path.name == "__init__.py"):
            target = imported.name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                lines = graph[name].setdefault(target, [])
                if imported.line not in lines:
                    lines.append(imported.line)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _describe(graph: Graph, component: list[str]) -> str:
    members = set(component)
    edges = [
        f"  {source} -> {target} (line {', '.join(map(str, lines))})"
        for source in component
        for target, lines in sorted(graph[source].items())
        if target in members
    ]
    return "cycle among " + ", ".join(component) + ":\n" + "\n".join(edges)


def test_package_modules_import_each_other_without_cycles() -> None:
    graph = import_graph()
    assert sum(len(targets) for targets in graph.values()) > 50  # the scan sees the packages' real imports
    found = cycles(graph)
    assert not found, "\n".join(_describe(graph, component) for component in found)


def test_diversity_and_feedback_import_neither_sedi_nor_each_other() -> None:
    modules = package_modules()
    offences = set()
    for name, path in modules.items():
        package = name.split(".")[0]
        if package not in INDEPENDENT:
            continue
        for imported in imports(_parse(path), name, path.name == "__init__.py"):
            top = imported.name.split(".")[0]
            if top in PACKAGES and top != package:
                offences.add(f"{path.relative_to(REPO)}:{imported.line} imports {top}")
    assert any(name.startswith("diversity.") for name in modules) and any(n.startswith("feedback.") for n in modules)
    assert not offences, "diversity and feedback stand alone:\n" + "\n".join(sorted(offences))


def wing_offences(graph: Graph) -> list[str]:
    """Imports against the wings' order: an inner wing importing a later wing, an outer wing or a top-level module
    (``sedi.exceptions`` aside); an outer wing importing a later outer wing."""

    def rank(module: str) -> int | None:  # None: outside sedi, or a top-level module (not checked as a source)
        parts = module.split(".")
        if parts[0] != "sedi" or len(parts) == 1:
            return None
        if parts[1] in ORDER:
            return ORDER.index(parts[1])
        return -1 if parts[1] in BASE else len(WINGS)  # a top-level module sits between inner and outer wings

    offences = []
    for source, targets in sorted(graph.items()):
        here = rank(source)
        if here is None or source.split(".")[1] not in ORDER:
            continue
        for target, lines in sorted(targets.items()):
            there = rank(target)
            if there is not None and there > here:
                offences.append(f"{source} -> {target} (line {', '.join(map(str, lines))})")
    return offences


def test_sedi_wings_import_only_earlier_wings_and_the_base() -> None:
    graph = import_graph()
    assert {"sedi.teacher.client", "sedi.store.db", "sedi.config.model"} <= set(graph)  # the wings exist
    offences = wing_offences(graph)
    assert not offences, f"wings import only earlier wings of {ORDER} and {BASE}:\n" + "\n".join(offences)


# --- The checks above find what they are meant to find --------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_import_scan_resolves_relative_imports_and_sees_them_at_any_depth() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .store import RunStore\n"
        "def late():\n    from ..diversity import rouge\n    import importlib\n"
        "    importlib.import_module('feedback.training')\n"
        "class A:\n    def method(self):\n        from . import loop\n"
    )
    names = {i.name for i in imports(ast.parse(source), "sedi.sub.module")}
    assert {"sedi.sub.store", "sedi.diversity.rouge", "feedback.training", "sedi.sub.loop"} <= names
    in_init = {i.name for i in imports(ast.parse("from .x import y\n"), "sedi.sub", is_init=True)}
    assert "sedi.sub.x.y" in in_init and "sedi.sub.x" in in_init


def test_import_path_edits_are_found_in_every_form() -> None:
    # The sample lives in a data file: written here it would be a path edit to any text scan of the tests.
    source = (REPO / "tests" / "data" / "import_path_edits.py.txt").read_text(encoding="utf-8")
    assert import_path_edits(ast.parse(source)) == [2, 3, 4, 5, 6, 7]


def test_the_graph_finds_a_cycle_hidden_in_a_function_and_ignores_parent_package_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "sedi/__init__.py": "from sedi import a\n",
            "sedi/a.py": "import sedi\nfrom sedi.b import thing\n",
            "sedi/b.py": "def f():\n    from . import c\n",
            "sedi/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sedi.a import x\n",
            "sedi/d.py": "from sedi import a\n",
            "diversity/__init__.py": "",
            "feedback/__init__.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["sedi"] == {"sedi.a": [1]} and graph["sedi.a"] == {"sedi.b": [2]}  # a -> its parent: no edge
    assert cycles(graph) == [["sedi.a", "sedi.b", "sedi.c"]]
    assert "sedi.c -> sedi.a (line 3)" in _describe(graph, cycles(graph)[0])


def test_the_wing_check_finds_a_back_arrow_a_top_level_import_and_a_base_module_leaning_on_a_wing() -> None:
    graph: Graph = {
        "sedi.store.db": {"sedi.teacher.client": [3], "sedi.config.model": [4], "sedi.base.vocabulary": [5]},
        "sedi.stages.generation": {"sedi.loop": [7], "sedi.teacher.client": [8]},
        "sedi.base.files": {"sedi.store.db": [9], "sedi.exceptions": [10]},
        "sedi.loop": {"sedi.export.formats": [11]},
        "sedi.experiment.arms": {"sedi.loop": [12], "sedi.cli.app": [13], "sedi.config.model": [14]},
        "sedi.cli.app": {"sedi.experiment.arms": [15], "sedi.api": [16]},
    }
    assert wing_offences(graph) == [
        "sedi.base.files -> sedi.store.db (line 9)",
        "sedi.experiment.arms -> sedi.cli.app (line 13)",
        "sedi.stages.generation -> sedi.loop (line 7)",
        "sedi.store.db -> sedi.teacher.client (line 3)",
    ]


def test_the_installed_packages_are_the_product_only() -> None:
    """Benchmark and sample-run code lives in ``scripts/benchmarks``, where no include pattern of pyproject.toml
    reaches (setuptools' ``find`` looks for packages from the repository root), and the product never imports it."""
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+, the project 3.10+
    section = re.search(r"^\[tool\.setuptools\.packages\.find\]\ninclude = \[(.*)\]$", pyproject, re.MULTILINE)
    assert section, "pyproject.toml: [tool.setuptools.packages.find] include = [...] not found"
    patterns = re.findall(r'"([^"]+)"', section.group(1))
    found = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert {"sedi", "tests"} <= found and (REPO / "scripts" / "benchmarks" / "__init__.py").is_file()
    shipped = {name for name in found if any(fnmatch(name, pattern) for pattern in patterns)}
    assert shipped == set(PACKAGES)
    offences = sorted(
        f"{name}:{imported.line} imports {imported.name}"
        for name, path in package_modules().items()
        for imported in imports(_parse(path), name, path.name == "__init__.py")
        if imported.name.split(".")[0] in {"benchmarks", "scripts", "tests"}
    )
    assert not offences, "the product imports no benchmark, script or test code:\n" + "\n".join(offences)
