"""Imports point downward only: the library never imports, or names, the programs built on it.

``backend/`` (the API), ``frontend/`` (the dashboard) and ``workers/`` (the RQ workers) import
``phasescope``; the library reaches them only through what its callers pass in (the job function to
``phasescope.service.queue.submit``) or through its installed entry points (``phasescope api``,
``phasescope worker``; pyproject.toml). docs/architecture.md, "Import direction".
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

import phasescope

LIBRARY = Path(phasescope.__file__).parent
ABOVE = ("workers", "backend", "frontend")
# A dotted module name (workers.jobs) or a path (backend/) of one of the packages above; the words
# alone ("the workers", "the backend") are English, not references.
NAMED = re.compile(r"(?<![\w.\-/])(?:workers|backend|frontend)(?:\.[A-Za-z_]|/)")


def _library_modules() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _strings_and_comments(source: str) -> list[tuple[int, str]]:
    """Every string literal (docstrings and f-string parts included) and comment, with its line."""
    found = [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_library_module_neither_imports_nor_names_the_programs_above(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    wrong = [m for m in _imports(ast.parse(source)) if m.split(".")[0] in ABOVE]
    assert not wrong, f"{path.name} imports {wrong}"
    named = [(line, text.strip()) for line, text in _strings_and_comments(source) if NAMED.search(text)]
    assert not named, f"{path.name} names a package above the library: {named}"
    bare = _bare_module_names(ast.parse(source))
    assert not bare, f"{path.name} runs or imports {bare} by name"


def _bare_module_names(tree: ast.AST) -> list[str]:
    """A package above named bare where only a module can be meant: ``[..., "-m", "workers"]`` or
    ``import_module("backend")`` (a bare ``"workers"`` elsewhere, a status key, is a word)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            found += [b for a, b in zip(items, items[1:], strict=False) if a == "-m" and b in ABOVE]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("import_module", "__import__", "find_spec") and node.args[0].value in ABOVE:
                found.append(node.args[0].value)
    return found


def test_the_check_catches_what_it_is_for() -> None:
    """The patterns above flag the references we removed and pass the English words."""
    flagged = [
        "import workers",
        "from backend.deps import JOB_FUNCTION",
        "RUN_JOB = 'workers.jobs.run_job'",
        "# Only backend/ turns them into responses",
    ]
    for source in flagged:
        tree = ast.parse(source)
        by_import = any(m.split(".")[0] in ABOVE for m in _imports(tree))
        by_name = any(NAMED.search(text) for _, text in _strings_and_comments(source))
        assert by_import or by_name, source
    for source in ["cmd = [sys.executable, '-m', 'workers']", "importlib.import_module('backend')"]:
        assert _bare_module_names(ast.parse(source)), source
    assert not _bare_module_names(ast.parse("status = {'workers': [], 'cmd': ['-m', 'phasescope']}"))
    for english in ["'the workers and the backend'", "# frontend-free", "'phasescope.service.queue'"]:
        assert not any(NAMED.search(text) for _, text in _strings_and_comments(english)), english


def test_the_library_is_all_covered() -> None:
    """Every subpackage's modules are checked (the list is not accidentally empty or shallow)."""
    parts = {p.relative_to(LIBRARY).parts[0] for p in _library_modules()}
    assert {"models", "phases", "service", "analysis", "measures", "zoo", "cli.py"} <= parts
