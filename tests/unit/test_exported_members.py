"""Each public module declares a complete, sorted ``__all__`` (as httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

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


# The library's packages re-export lazily (phasescope._lazy): each lists its re-exports once, as
# imports under `if TYPE_CHECKING:`, and `__all__` must name exactly those (plus eager constants).
PACKAGES = [
    "phasescope",
    "phasescope.analysis",
    "phasescope.measures",
    "phasescope.models",
    "phasescope.phases",
    "phasescope.service",
    "phasescope.zoo",
]
EAGER = {"phasescope": {"MEASURES_VERSION", "__version__"}}


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_matches_its_lazy_exports(name: str) -> None:
    from phasescope._lazy import exports_of

    package = importlib.import_module(name)
    assert hasattr(package, "__all__"), f"{name} declares no __all__"
    lazy = exports_of(package.__file__)
    if not lazy:  # an eager package (phasescope.measures re-exports its torch-free registry)
        assert all(item in vars(package) for item in package.__all__), name
    else:
        assert set(package.__all__) == set(lazy) | EAGER.get(name, set()), name
    for item, module in lazy.items():
        # Each name is the very object its module defines (not a same-named stand-in).
        assert getattr(package, item) is getattr(importlib.import_module(module), item), item
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        package.not_exported  # noqa: B018


def _imported_after(code: str) -> set[str]:
    """Top-level modules imported by a fresh interpreter that runs ``code``."""
    probe = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_phasescope_is_cheap() -> None:
    """`import phasescope` (the backend and the frontend do) imports neither torch nor pandas."""
    imported = _imported_after("import phasescope")
    assert "phasescope" in imported
    assert not imported & {"torch", "transformer_lens", "pandas", "numpy", "transformers"}, imported


def test_every_top_level_name_resolves() -> None:
    """Every name in phasescope.__all__ resolves in a fresh interpreter, and torch comes with load_model."""
    code = "import phasescope\nfor n in phasescope.__all__: getattr(phasescope, n)"
    assert {"torch", "pandas"} <= _imported_after(code)


@pytest.mark.parametrize("name", ["phasescope.measures", "phasescope.phases", "phasescope.service"])
def test_torch_free_packages_resolve_without_torch(name: str) -> None:
    """The backend imports these: all their exports resolve without importing torch."""
    code = f"import importlib\nm = importlib.import_module({name!r})\nfor n in m.__all__: getattr(m, n)"
    imported = _imported_after(code)
    assert "pandas" in imported or name != "phasescope.phases"
    assert "torch" not in imported and "transformer_lens" not in imported
