"""Docstring coverage for the library packages (``recsys/`` and ``features/``).

Flags, as ``file:line name``:

* every public module-level function, public class, and public method of a public class that has
  no docstring (dunders and ``_private`` names are skipped; ``@overload`` stubs and property
  setters/deleters too);
* every public module-level function that takes at least one parameter but whose docstring has no
  ``Args:`` section (the Google / TorchRec-example style: summary line, ``Args:``, ``Returns:``,
  ``Raises:``).

Static (AST only, nothing is imported), so it is fast and unaffected by import-time side effects.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recsys", "features")
_ARGS_SECTION = re.compile(r"^\s*Args:\s*$", re.MULTILINE)

FuncNode = ast.FunctionDef | ast.AsyncFunctionDef


def _public(name: str) -> bool:
    return not name.startswith("_")


def _decorator_names(node: FuncNode) -> set[str]:
    names = set()
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call):
            dec = dec.func
        if isinstance(dec, ast.Name):
            names.add(dec.id)
        elif isinstance(dec, ast.Attribute):
            names.add(dec.attr)
    return names


def _skip_function(node: FuncNode) -> bool:
    """``@overload`` stubs and ``@x.setter`` / ``@x.deleter`` share the documented name."""
    return bool(_decorator_names(node) & {"overload", "setter", "deleter"})


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements at module level, looking through ``if``/``try`` blocks (no functions or classes)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                yield from _top_level(block)
        else:
            yield stmt


def _has_params(node: FuncNode) -> bool:
    a = node.args
    return bool(a.posonlyargs or a.args or a.kwonlyargs or a.vararg or a.kwarg)


def check_source(source: str, path: str) -> list[str]:
    """Problems in one module's source, each as ``path:line name: what``.

    Args:
        source: the module's Python source.
        path: how to name the file in the messages.

    Returns:
        One line per missing docstring or missing ``Args:`` section, in source order.
    """
    problems: list[str] = []
    tree = ast.parse(source, filename=path)
    for stmt in _top_level(tree.body):
        if isinstance(stmt, FuncNode) and _public(stmt.name) and not _skip_function(stmt):
            doc = ast.get_docstring(stmt)
            if not doc:
                problems.append(f"{path}:{stmt.lineno} {stmt.name}: no docstring")
            elif _has_params(stmt) and not _ARGS_SECTION.search(doc):
                problems.append(f"{path}:{stmt.lineno} {stmt.name}: no Args: section")
        elif isinstance(stmt, ast.ClassDef) and _public(stmt.name):
            if not ast.get_docstring(stmt):
                problems.append(f"{path}:{stmt.lineno} {stmt.name}: no docstring")
            for member in stmt.body:
                if (
                    isinstance(member, FuncNode)
                    and _public(member.name)
                    and not _skip_function(member)
                    and not ast.get_docstring(member)
                ):
                    problems.append(f"{path}:{member.lineno} {stmt.name}.{member.name}: no docstring")
    return problems


def collect_problems(root: Path = PROJECT_ROOT) -> list[str]:
    """Problems in every module under :data:`PACKAGES`.

    Args:
        root: the project root holding the packages.

    Returns:
        All problems, sorted by file then line.
    """
    problems: list[str] = []
    for package in PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            rel = file.relative_to(root).as_posix()
            problems.extend(check_source(file.read_text(encoding="utf-8"), rel))
    return problems


def test_checker_flags_missing_docstrings_and_args() -> None:
    source = '''
def documented(x):
    """Has a docstring.

    Args:
        x: a value.
    """

def bare():
    pass

def no_args_section(x):
    """Takes x but does not say what it is."""

def _private(x):
    pass

class Public:
    """Documented."""

    def method(self):
        pass

    def __init__(self):
        pass

    def _helper(self):
        pass

class Undocumented:
    pass

class _Hidden:
    def method(self):
        pass
'''
    assert check_source(source, "m.py") == [
        "m.py:9 bare: no docstring",
        "m.py:12 no_args_section: no Args: section",
        "m.py:21 Public.method: no docstring",
        "m.py:30 Undocumented: no docstring",
    ]


def test_library_has_docstrings() -> None:
    problems = collect_problems()
    assert not problems, f"{len(problems)} docstring problem(s):\n" + "\n".join(problems)
