"""The import contract of the engine: it is pure, so it imports the standard library and itself, nothing else.

Every module under ``machinery/engine`` is parsed (not imported) and each of its imports, wherever it stands
(top level, function body, ``if TYPE_CHECKING``), is checked. Frameworks (flask, marshmallow, pymongo, celery,
kombu, requests, urllib3, graphviz, ...) and the other ``machinery`` packages (the adapters) are refused.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import machinery.engine

ENGINE = "machinery.engine"
ENGINE_DIR = Path(machinery.engine.__file__).parent
MODULES = sorted(ENGINE_DIR.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ENGINE, *parts))


def allowed(target: str) -> bool:
    """Whether importing ``target`` keeps the engine pure: the standard library or the engine itself."""
    return target.split(".")[0] in sys.stdlib_module_names or target == ENGINE or target.startswith(ENGINE + ".")


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement loads, relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")[: None if is_package else -1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if ENGINE.startswith(base + "."):
        # ``from machinery import x`` (or ``from .. import x``) loads ``machinery.x``: that is what must be allowed.
        return [f"{base}.{alias.name}" for alias in node.names]
    return [base]


def forbidden_imports(source: str, module: str, filename: str = "<engine>", is_package: bool = False) -> list[str]:
    """One line per import that leaves the standard library and the engine, naming the module and the import."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{module} ({filename}, line {getattr(node, 'lineno', '?')})"
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in imported(node, module, is_package):
                if not allowed(target):
                    statement = ast.unparse(node)
                    found.append(
                        f"{where} imports {target!r}: `{statement}` is neither the standard library nor {ENGINE}"
                    )
                elif target.split(".")[0] == "importlib":
                    found.append(f"{where} imports {target!r}: `{ast.unparse(node)}` allows dynamic imports")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("__import__", "import_module"):
                found.append(f"{where} imports dynamically: `{ast.unparse(node)}` escapes this check")
    return found


def test_the_engine_has_modules_to_check():
    names = {module_name(path) for path in MODULES}
    assert {f"{ENGINE}.{m}" for m in ("types", "model", "checker", "decider", "state", "ports")} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_an_engine_module_imports_only_the_standard_library_and_the_engine(path):
    problems = forbidden_imports(
        path.read_text(encoding="utf-8"), module_name(path), str(path), is_package=path.name == "__init__.py"
    )
    assert problems == [], "\n".join(problems)


# The contract check itself: it must refuse what the engine may not import, and let the rest through.


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("import flask", "flask"),
        ("from marshmallow import Schema", "marshmallow"),
        ("import pymongo.errors", "pymongo.errors"),
        ("from celery import Celery", "celery"),
        ("import kombu", "kombu"),
        ("import requests", "requests"),
        ("from urllib3.util import Retry", "urllib3.util"),
        ("import graphviz as gv", "graphviz"),
        ("from machinery import runtime", "machinery.runtime"),
        ("from machinery.codec import parse_ref", "machinery.codec"),
        ("import machinery.services.http", "machinery.services.http"),
        ("import machinery", "machinery"),
        ("import machinery.engineering", "machinery.engineering"),
        ("from .. import runtime", "machinery.runtime"),
        ("from ..codec import parse_ref", "machinery.codec"),
        ("def f():\n    import requests\n", "requests"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flask import Flask\n", "flask"),
    ],
)
def test_the_contract_refuses_an_import_from_outside_the_standard_library_and_the_engine(source, target):
    [problem] = forbidden_imports(source, f"{ENGINE}.decider", "decider.py")
    assert problem.startswith(f"{ENGINE}.decider (decider.py, line ")
    assert f"imports {target!r}" in problem
    assert f"`{source.strip().splitlines()[-1].strip()}`" in problem


@pytest.mark.parametrize(
    "source",
    ["__import__('flask')", "importlib.import_module('pymongo')", "from importlib import import_module as m\nm('x')"],
)
def test_the_contract_refuses_dynamic_imports(source):
    problems = forbidden_imports(source, f"{ENGINE}.decider")
    assert any("dynamic" in p for p in problems), problems


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "import json, re",
        "from collections.abc import Mapping",
        "import xml.etree.ElementTree as ET",
        "from machinery.engine.types import FieldType",
        "import machinery.engine.model",
        "from machinery.engine import decider",
        "from machinery import engine",
        "from . import types",
        "from .state import Event",
    ],
)
def test_the_contract_lets_the_standard_library_and_the_engine_through(source):
    assert forbidden_imports(source, f"{ENGINE}.decider") == []
