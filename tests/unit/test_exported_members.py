"""Each public module declares a complete, sorted ``__all__`` (as httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import backend
import phasescope
import workers


def _modules() -> list[str]:
    names = []
    for package in (phasescope, backend, workers):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    if inspect.getfile(module).endswith("__init__.py") and not hasattr(module, "__all__"):
        return  # namespace-like packages without a public surface of their own
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(exported), f"{name}.__all__ is not sorted"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names missing {item}"
    public = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == name
    }
    if name == "phasescope.cli" or name.startswith("backend.routes."):
        # The CLI's public surface is `app`, a route module's is `router`; their functions are
        # reached through them.
        public = set()
    assert public <= set(exported), f"{name}: public but not exported: {sorted(public - set(exported))}"
