"""The zoo's registry and its series directories: which series exist, which are trained, training them.

A series is *trained* when its directory holds a valid manifest for that series, listing exactly the
full schedule's steps, and every listed checkpoint file exists. ``train_series`` trains into a hidden
sibling directory and renames it into place only when the manifest is written, so an interrupted run
leaves at most a ``.<name>.partial-*`` directory behind, never a series that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError, ModelNotFound
from phasescope.models.series import checkpoint_filename, is_series_dir, read_manifest
from phasescope.zoo.grokking import grokking_spec
from phasescope.zoo.induction import induction_spec
from phasescope.zoo.spec import ZooSpec
from phasescope.zoo.training import DEFAULT_THREADS

__all__ = ["ZOO", "get_spec", "is_trained", "train_series", "zoo_series_dir"]

# Expected seconds: wall times measured with the default single thread on an idle core (docs/zoo.md).
ZOO: dict[str, ZooSpec] = {
    spec.name: spec
    for spec in (
        induction_spec(2, expected_seconds=28.0),
        induction_spec(1, expected_seconds=17.0),
        grokking_spec(59, expected_seconds=150.0),
    )
}


def get_spec(name: str) -> ZooSpec:
    """The spec of series ``name`` (a leading ``zoo:`` is accepted).

    Raises:
        ModelNotFound: for a name the zoo does not have, with the valid names as choices.
    """
    key = name.removeprefix("zoo:")
    if key not in ZOO:
        raise ModelNotFound(
            f"unknown zoo series {key!r}", field="model", choices=sorted(f"zoo:{n}" for n in ZOO)
        )
    return ZOO[key]


def zoo_series_dir(name: str, settings: Settings | None = None) -> Path:
    """Where series ``name`` lives: ``<settings.zoo_dir>/<name>``."""
    return (settings or get_settings()).zoo_dir / get_spec(name).name


def _is_complete(name: str, series_dir: Path) -> bool:
    if not is_series_dir(series_dir):
        return False
    try:
        manifest = read_manifest(series_dir)
    except ModelLoadError:
        return False
    spec = get_spec(name)
    if manifest.name != spec.name or list(manifest.steps) != list(spec.checkpoint_steps):
        return False
    return all((series_dir / checkpoint_filename(step)).is_file() for step in manifest.steps)


def is_trained(name: str, settings: Settings | None = None, out_dir: Path | None = None) -> bool:
    """True when series ``name`` is complete on disk (in ``out_dir``, default its zoo directory)."""
    return _is_complete(name, out_dir if out_dir is not None else zoo_series_dir(name, settings))


def train_series(
    name: str,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    out_dir: Path | str | None = None,
    settings: Settings | None = None,
    threads: int = DEFAULT_THREADS,
) -> Path:
    """Train series ``name`` unless it is already complete; returns the series directory.

    Args:
        name: series name (``zoo:`` prefix accepted).
        seed: training seed. A complete series is reused whatever seed it was trained with, unless
            ``force``.
        progress: show a tqdm progress bar.
        force: retrain even when a complete series exists (it is replaced only once the new one is
            complete).
        out_dir: the series directory; default ``zoo_series_dir(name, settings)``.
        settings: settings for the default directory.
        threads: torch CPU threads; another count than the default gives slightly different weights.
    """
    spec = get_spec(name)
    target = Path(out_dir) if out_dir is not None else zoo_series_dir(spec.name, settings)
    if not force and _is_complete(spec.name, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one filesystem (and is atomic).
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        spec.train(staging, seed=seed, progress=progress, threads=threads)
        if target.exists():
            # Move the old series aside first: os.replace cannot replace a non-empty directory.
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
