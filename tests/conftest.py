"""Shared fixtures: every test runs against its own data directory, never the user's home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phasescope.config import get_settings


@pytest.fixture(autouse=True)
def isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point PHASESCOPE_DATA_DIR at a fresh temporary directory (unless a test sets its own)."""
    data = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("PHASESCOPE_DATA_DIR", str(data))
    monkeypatch.delenv("PHASESCOPE_MODEL_ROOTS", raising=False)
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


def _cached_series(name: str) -> Path:
    """A zoo series trained once (seed 0) and kept in a cache keyed by its recipe.

    The cache is ``$PHASESCOPE_TEST_CACHE`` (default ``~/.cache/phasescope-tests``); a changed recipe
    gets a new key, so a stale series is never used.
    """
    import hashlib
    import os

    from phasescope.zoo import ZOO, is_trained, train_series

    key = hashlib.sha256(repr(ZOO[name]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("PHASESCOPE_TEST_CACHE", Path.home() / ".cache" / "phasescope-tests"))
    path = root / f"{name}-{key}"
    if not is_trained(name, out_dir=path):
        train_series(name, seed=0, progress=False, out_dir=path)
    return path


@pytest.fixture(scope="session")
def trained_induction_2l(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:induction-2l trained once (minutes of CPU) and cached (``_cached_series``)."""
    return _cached_series("induction-2l")


@pytest.fixture(scope="session")
def trained_induction_1l() -> Path:
    """zoo:induction-1l, the one-layer control, trained once and cached (``_cached_series``)."""
    return _cached_series("induction-1l")


ZOO_SEEDS = {"induction-2l": (0, 1, 2), "grokking-p59": (0, 1, 2)}
"""The seed ensembles the tests train (issue 14's reference facts, 3 seeds each to keep CI small)."""


@pytest.fixture(scope="session")
def trained_zoo_seeds() -> dict[tuple[str, int], Path]:
    """``ZOO_SEEDS`` trained once, two processes at a time, and cached like ``trained_induction_2l``.

    Keyed by recipe and seed in the same cache (``induction-2l`` seed 0 is that fixture's very
    directory, so neither trains it twice). Cold, on 2 idle cores: about 4 minutes, nearly all of it
    grokking (docs/zoo.md, "Seed ensembles").
    """
    import hashlib
    import os

    from phasescope.zoo import ZOO, get_variant
    from phasescope.zoo.parallel import train_variants

    root = Path(os.environ.get("PHASESCOPE_TEST_CACHE", Path.home() / ".cache" / "phasescope-tests"))
    paths: dict[tuple[str, int], Path] = {}
    for name, seeds in ZOO_SEEDS.items():
        key = hashlib.sha256(repr(ZOO[name]).encode()).hexdigest()[:12]
        for seed in seeds:
            paths[(name, seed)] = root / (f"{name}-{key}" if seed == 0 else f"{name}-seed{seed}-{key}")
    # Longest first (grokking), so the two processes finish together.
    order = sorted(paths, key=lambda k: -ZOO[k[0]].expected_seconds)
    names = [get_variant(name, seed=seed).name for name, seed in order]
    train_variants(names, [paths[k] for k in order], parallel=2)
    return paths
