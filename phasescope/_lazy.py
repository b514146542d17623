"""Lazy re-exports for the packages' ``__init__`` modules.

A package lists what it re-exports once, as ordinary imports under ``if TYPE_CHECKING:`` (so type
checkers and editors see the real objects), and calls :func:`attach`, which reads those imports from
the package's own source and imports each submodule only when one of its names is first used. So
``import phasescope`` costs no torch, while ``phasescope.load_model`` still works (httpx re-exports
its API from ``__init__`` the same way, eagerly; scientific-python's lazy_loader reads a stub file
the same way).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["attach", "exports_of"]


def exports_of(init_file: str | Path) -> dict[str, str]:
    """The names a package re-exports and the module each comes from.

    Args:
        init_file: the package's ``__init__.py``.

    Returns:
        ``{name: absolute module}`` from every ``from <module> import <name>`` inside the file's
        top-level ``if TYPE_CHECKING:`` blocks.
    """
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    exports: dict[str, str] = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        ):
            continue
        for stmt in node.body:
            # Relative imports would need the package to resolve; we write absolute ones.
            assert isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module, ast.dump(stmt)
            for alias in stmt.names:
                exports[alias.asname or alias.name] = stmt.module
    return exports


def attach(package: str, init_file: str) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for a package that re-exports lazily.

    Args:
        package: the package's ``__name__``.
        init_file: its ``__file__`` (the ``__init__.py`` whose ``if TYPE_CHECKING:`` imports list
            the exports).

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's namespace.
    """
    exports = exports_of(init_file)

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Cached in the package's namespace: the next lookup is an ordinary attribute read.
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
