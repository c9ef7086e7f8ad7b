"""No module of the package uses a private name (``_x``) of another of its modules.

A leading underscore says "only this module relies on it": a module that imports one, or reads
``other_module._x``, ties itself to the other's internals (issue 8). The scan reads the source's
syntax tree; names of other packages (onnx's own private kernels, which the judge borrows) are
not its concern.
"""

import ast
import os
from typing import Dict, List

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "onnxgrad")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package_module(module: str, level: int, path: str, root: str) -> bool:
    """Whether ``from <level dots><module> import ...`` in ``path`` names a module of the package."""
    if level == 0:
        return module == "onnxgrad" or module.startswith("onnxgrad.")
    base = os.path.dirname(path)
    for _ in range(level - 1):
        base = os.path.dirname(base)
    return os.path.commonpath([base, root]) == root


def _is_module(module: str, level: int, name: str, path: str) -> bool:
    """Whether ``from <module> import <name>`` binds a module (a file or package of the package)."""
    base = os.path.dirname(path)
    for _ in range(level - 1):
        base = os.path.dirname(base)
    parts = [p for p in module.split(".") if p] if level else module.split(".")[1:]
    target = os.path.join(PACKAGE if level == 0 else base, *parts, name)
    return os.path.isfile(target + ".py") or os.path.isdir(target)


def leaks(source: str, path: str, root: str = PACKAGE) -> List[str]:
    """Each use in ``source`` (the file ``path`` under ``root``) of another package module's
    private name, as ``line: text``."""
    tree = ast.parse(source, path)
    found = []
    modules: Dict[str, str] = {}  # local name -> package module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _package_module(node.module or "", node.level, path, root):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                elif _is_module(node.module or "", node.level, alias.name, path):
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("onnxgrad.") and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and _private(node.attr)):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def _sources() -> List[str]:
    paths = []
    for folder, _, files in os.walk(PACKAGE):
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(paths)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: os.path.relpath(p, PACKAGE))
def test_no_private_name_of_another_module(path):
    with open(path, encoding="utf-8") as f:
        assert leaks(f.read(), path) == []


def test_the_scan_finds_each_form_of_leak():
    """The scan itself: a private import (relative or absolute) and a private attribute of an
    imported module are found; public names, dunders and other packages' privates are not."""
    path = os.path.join(PACKAGE, "rules", "example.py")
    source = "\n".join([
        "from .recurrent import _graph, body",
        "from ..api import __all__",
        "from onnxgrad.emitter import _fill_node",
        "from .. import registry",
        "from onnx.reference.ops.op_conv import _conv_implementation",
        "registry._REGISTRY",
        "registry.lookup",
    ])
    assert leaks(source, path) == ["1: from .recurrent import _graph", "3: from onnxgrad.emitter import _fill_node",
                                   "6: registry._REGISTRY"]
