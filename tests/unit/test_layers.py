"""Enforces the package layering of docs/ARCHITECTURE.md ("Layers"):

    recsys (bottom) <- features <- serving <- training (top)

A module under one of these packages may import only from its own package or a package below it,
and imports of project packages sit at module level: none inside a function or method body (a
dodged circle), none under ``if TYPE_CHECKING:`` (a hidden edge). Third-party imports inside
functions are fine. ``importlib.import_module("pkg...")`` / ``__import__("pkg...")`` with a literal
name count as imports too.

Static (AST only, nothing is imported), so it is fast and unaffected by import-time side effects.
Same idea as ../shared/tools/layers.py, written out here so the test does not depend on ../shared.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Bottom to top: a package may import from itself and anything earlier in this tuple.
LAYERS = ("recsys", "features", "serving", "training")
RANK = {pkg: i for i, pkg in enumerate(LAYERS)}


@dataclass(frozen=True)
class ProjectImport:
    path: str  # relative to the scanned root, posix
    line: int
    source: str  # package the importing module belongs to
    target: str  # project package imported
    names: tuple[str, ...]  # dotted names imported
    where: str  # "" at module level, else "inside function X" / "inside if TYPE_CHECKING"

    def edge(self) -> str:
        return f"{self.path}:{self.line}: {self.source} -> {self.target} ({', '.join(self.names)})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    """Every import of a project package in one module, with where it sits."""

    def __init__(self, path: str, package: str, dynamic: bool = True) -> None:
        self.path, self.package = path, package
        self.dynamic = dynamic  # whether to look into expressions for import_module/__import__ calls
        self.scopes: list[str] = []  # enclosing classes/functions
        self.functions = 0  # how many of them are functions
        self.type_checking = 0
        self.found: list[ProjectImport] = []

    def _where(self) -> str:
        if self.functions:
            return f"inside function {'.'.join(self.scopes)}"
        if self.type_checking:
            return "inside if TYPE_CHECKING"
        return ""

    def _add(self, node: ast.stmt | ast.expr, target: str, names: list[str]) -> None:
        if target in RANK:
            self.found.append(
                ProjectImport(self.path, node.lineno, self.package, target, tuple(names), self._where())
            )

    def generic_visit(self, node: ast.AST) -> None:
        # Import statements are statements: without a dynamic import in the file, expressions can be skipped.
        for child in ast.iter_child_nodes(node):
            if self.dynamic or isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        by_target: dict[str, list[str]] = {}
        for alias in node.names:
            by_target.setdefault(alias.name.split(".")[0], []).append(alias.name)
        for target, names in by_target.items():
            self._add(node, target, names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: stays inside the importing module's own package
            module = "." * node.level + (node.module or "")
            target = self.package
        else:
            module = node.module or ""
            target = module.split(".")[0]
        sep = "" if module.endswith(".") else "."
        self._add(node, target, [f"{module}{sep}{a.name}" for a in node.names])

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                self._add(node, arg.value.split(".")[0], [f"{name}({arg.value!r})"])
        self.generic_visit(node)

    def _visit_scope(self, node: ast.AST, name: str, is_function: bool) -> None:
        # Decorators, defaults and annotations run in the enclosing scope; only the body is "inside".
        for child in ast.iter_child_nodes(node):
            if child not in getattr(node, "body", []):
                self.visit(child)
        self.scopes.append(name)
        self.functions += is_function
        for child in node.body:  # type: ignore[attr-defined]
            self.visit(child)
        self.functions -= is_function
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_scope(node, node.name, True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_scope(node, node.name, True)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        self.scopes.append("<lambda>")
        self.functions += 1
        self.visit(node.body)
        self.functions -= 1
        self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_scope(node, node.name, False)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        flag = _is_type_checking(node.test)
        self.type_checking += flag
        for child in node.body:
            self.visit(child)
        self.type_checking -= flag
        for child in node.orelse:
            self.visit(child)


def collect_source(source: str, path: str, package: str) -> list[ProjectImport]:
    """The project imports of one module's source (``package``: the top-level package it belongs to)."""
    collector = _ImportCollector(path, package, dynamic="import_module" in source or "__import__" in source)
    collector.visit(ast.parse(source, filename=path))
    return collector.found


def layer_violations(imports: list[ProjectImport]) -> list[str]:
    """Imports that point up the layers."""
    return [imp.edge() for imp in imports if RANK[imp.target] > RANK[imp.source]]


def placement_violations(imports: list[ProjectImport]) -> list[str]:
    """Project imports that are not at module level (function bodies, ``if TYPE_CHECKING:``)."""
    return [f"{imp.edge()} {imp.where}" for imp in imports if imp.where]


@functools.cache
def scan(root: Path, package: str) -> tuple[tuple[ProjectImport, ...], tuple[str, ...]]:
    """Project imports of every .py file under ``root/package``, and the files that do not parse."""
    imports: list[ProjectImport] = []
    errors: list[str] = []
    for file in sorted((root / package).rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        try:
            imports += collect_source(file.read_text(encoding="utf-8"), rel, package)
        except SyntaxError as exc:
            errors.append(f"{rel}:{exc.lineno}: does not parse ({exc.msg})")
    return tuple(imports), tuple(errors)


def _report(title: str, lines: list[str]) -> str:
    return f"{len(lines)} {title}:\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------------------- the project


@pytest.mark.parametrize("package", LAYERS)
def test_package_exists_and_parses(package: str) -> None:
    assert any((PROJECT_ROOT / package).rglob("*.py")), f"no .py files under {PROJECT_ROOT / package}"
    _, errors = scan(PROJECT_ROOT, package)
    if errors:
        pytest.fail(_report("modules that do not parse", list(errors)), pytrace=False)


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down_the_layers(package: str) -> None:
    imports, _ = scan(PROJECT_ROOT, package)
    bad = layer_violations(list(imports))
    allowed = ", ".join(LAYERS[: RANK[package] + 1])
    if bad:
        pytest.fail(
            _report(
                f"imports from {package} to a higher layer (allowed: {allowed}; layers bottom to top: "
                f"{' <- '.join(LAYERS)}; see docs/ARCHITECTURE.md)",
                bad,
            ),
            pytrace=False,
        )


@pytest.mark.parametrize("package", LAYERS)
def test_project_imports_at_module_level(package: str) -> None:
    imports, _ = scan(PROJECT_ROOT, package)
    bad = placement_violations(list(imports))
    if bad:
        pytest.fail(
            _report(
                f"project imports in {package} not at module level (no import inside a function or "
                "under if TYPE_CHECKING; see docs/ARCHITECTURE.md)",
                bad,
            ),
            pytrace=False,
        )


# ----------------------------------------------------------------------- the checker can fail

UPWARD = """\
import numpy as np
from recsys.config import load_config
import features.ranking
from serving.app import create_app, build
import training.cli as cli, json
"""


def test_checker_reports_upward_imports() -> None:
    imports = collect_source(UPWARD, "features/bad.py", "features")
    assert layer_violations(imports) == [
        "features/bad.py:4: features -> serving (serving.app.create_app, serving.app.build)",
        "features/bad.py:5: features -> training (training.cli)",
    ]
    assert placement_violations(imports) == []


def test_checker_allows_own_and_lower_packages() -> None:
    source = "from recsys import config\nfrom features.ranking import x\nfrom . import sibling\nfrom ..content import y\n"
    imports = collect_source(source, "features/content/a.py", "features")
    assert [(i.target, i.names) for i in imports] == [
        ("recsys", ("recsys.config",)),
        ("features", ("features.ranking.x",)),
        ("features", (".sibling",)),
        ("features", ("..content.y",)),
    ]
    assert layer_violations(imports) == [] and placement_violations(imports) == []


def test_checker_reports_imports_inside_functions_and_type_checking() -> None:
    source = """\
from typing import TYPE_CHECKING
import typing

if TYPE_CHECKING:
    from recsys.bundle import Bundle
if typing.TYPE_CHECKING:
    pass
else:
    from recsys import config  # the else branch runs: module level

def f():
    import torch  # third party inside a function: fine
    from recsys.vectors import load
    return lambda: __import__("recsys.query")

class Service:
    from recsys import atomic  # class body runs at import time: module level
    async def reload(self, default=None):
        import importlib
        importlib.import_module("training.cli")
        from . import helpers
"""
    imports = collect_source(source, "serving/svc.py", "serving")
    assert placement_violations(imports) == [
        "serving/svc.py:5: serving -> recsys (recsys.bundle.Bundle) inside if TYPE_CHECKING",
        "serving/svc.py:13: serving -> recsys (recsys.vectors.load) inside function f",
        "serving/svc.py:14: serving -> recsys (__import__('recsys.query')) inside function f.<lambda>",
        "serving/svc.py:20: serving -> training (import_module('training.cli')) inside function Service.reload",
        "serving/svc.py:21: serving -> serving (.helpers) inside function Service.reload",
    ]
    assert layer_violations(imports) == [
        "serving/svc.py:20: serving -> training (import_module('training.cli'))",
    ]


def test_checker_finds_imports_nested_in_statements() -> None:
    source = """\
try:
    from training import cli
except ImportError:
    cli = None

def g(paths):
    with open(paths[0]) as fh:
        for p in paths:
            try:
                pass
            except ValueError:
                while True:
                    match p:
                        case "x":
                            import serving.app
"""
    imports = collect_source(source, "features/n.py", "features")
    assert layer_violations(imports) == [
        "features/n.py:2: features -> training (training.cli)",
        "features/n.py:15: features -> serving (serving.app)",
    ]
    assert placement_violations(imports) == [
        "features/n.py:15: features -> serving (serving.app) inside function g"
    ]


def test_checker_on_a_file_tree(tmp_path: Path) -> None:
    (tmp_path / "recsys" / "models").mkdir(parents=True)
    (tmp_path / "recsys" / "__init__.py").write_text("")
    (tmp_path / "recsys" / "models" / "als.py").write_text("import os\n\nfrom serving.app import app\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "cli.py").write_text("from recsys.models import als\nfrom serving import app\n")
    (tmp_path / "training" / "broken.py").write_text("def (:\n")
    recsys_imports, recsys_errors = scan(tmp_path, "recsys")
    assert layer_violations(list(recsys_imports)) == [
        "recsys/models/als.py:3: recsys -> serving (serving.app.app)"
    ]
    assert recsys_errors == ()
    training_imports, training_errors = scan(tmp_path, "training")
    assert layer_violations(list(training_imports)) == []
    assert [e.split(": does not parse")[0] for e in training_errors] == ["training/broken.py:1"]
