"""The zoo's registry and its series directories: which series exist, which are trained, training them.

Every function here takes a series name with its seed and schedule variant, ``induction-2l-seed3``
(``phasescope.zoo.variants``); the plain name is seed 0 on the recipe's schedule.

A series is *trained* when its directory holds a valid manifest for that series and seed, listing
exactly the variant's schedule, and every listed checkpoint file exists. ``train_series`` trains into a hidden
sibling directory and renames it into place only when the manifest is written, so an interrupted run
leaves at most a ``.<name>.partial-*`` directory behind, never a series that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError
from phasescope.models.series import checkpoint_filename, is_series_dir, read_manifest
from phasescope.zoo.grokking import grokking_spec
from phasescope.zoo.induction import induction_spec
from phasescope.zoo.spec import ZooSpec
from phasescope.zoo.training import DEFAULT_THREADS
from phasescope.zoo.variants import SeriesVariant, parse_series_name

__all__ = ["ZOO", "get_spec", "get_variant", "is_trained", "train_series", "zoo_series_dir"]

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
    """The recipe of series ``name`` (a leading ``zoo:`` and a seed/schedule variant are accepted).

    Raises:
        ModelNotFound: for a name the zoo does not have, with the valid names as choices.
        InvalidRequest: a variant out of its limits (``phasescope.zoo.variants``).
    """
    key = name.removeprefix("zoo:")
    if key in ZOO:
        return ZOO[key]
    return parse_series_name(key).spec


def get_variant(name: str, seed: int | None = None, every: int | None = None) -> SeriesVariant:
    """Series ``name`` as a variant, with ``seed`` and ``every`` (when given) replacing the name's own.

    Raises:
        ModelNotFound, InvalidRequest: as ``parse_series_name``.
    """
    variant = parse_series_name(name)
    if seed is None and every is None:
        return variant
    spelled = variant.base
    seed = variant.seed if seed is None else seed
    every = variant.every if every is None else every
    spelled += f"-seed{seed}" if seed else ""
    spelled += f"-every{every}" if every else ""
    return parse_series_name(spelled)


def zoo_series_dir(name: str, settings: Settings | None = None) -> Path:
    """Where series ``name`` lives: ``<settings.zoo_dir>/<canonical variant name>``."""
    return (settings or get_settings()).zoo_dir / parse_series_name(name).name


def _is_complete(variant: SeriesVariant, series_dir: Path) -> bool:
    if not is_series_dir(series_dir):
        return False
    try:
        manifest = read_manifest(series_dir)
    except ModelLoadError:
        return False
    if manifest.name != variant.name or manifest.seed != variant.seed:
        return False
    if list(manifest.steps) != list(variant.checkpoint_steps):
        return False
    return all((series_dir / checkpoint_filename(step)).is_file() for step in manifest.steps)


def is_trained(
    name: str, settings: Settings | None = None, out_dir: Path | None = None, seed: int | None = None
) -> bool:
    """True when series ``name`` (for ``seed``, default the name's own) is complete on disk, in
    ``out_dir`` (default its zoo directory)."""
    variant = get_variant(name, seed)
    target = out_dir if out_dir is not None else (settings or get_settings()).zoo_dir / variant.name
    return _is_complete(variant, target)


def train_series(
    name: str,
    seed: int | None = None,
    progress: bool = True,
    force: bool = False,
    out_dir: Path | str | None = None,
    settings: Settings | None = None,
    threads: int = DEFAULT_THREADS,
    every: int | None = None,
) -> Path:
    """Train series ``name`` unless it is already complete; returns the series directory.

    Args:
        name: series name (``zoo:`` prefix accepted), optionally a variant (``induction-2l-seed3``).
        seed: training seed (default the name's: 0 for a plain name). The default directory is the
            seed's own (``induction-2l-seed3``); a complete series of that seed is reused unless
            ``force``.
        progress: show a tqdm progress bar.
        force: retrain even when a complete series exists (it is replaced only once the new one is
            complete).
        out_dir: the series directory; default ``zoo_series_dir(name, settings)``.
        settings: settings for the default directory.
        threads: torch CPU threads; another count than the default gives slightly different weights.
        every: also checkpoint every multiple of this step (default the name's; a different series,
            in its own directory, ``induction-2l-every5``).
    """
    variant = get_variant(name, seed, every)
    spec = variant.spec
    target = Path(out_dir) if out_dir is not None else zoo_series_dir(variant.name, settings)
    if not force and _is_complete(variant, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one filesystem (and is atomic).
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        spec.train(
            staging,
            seed=variant.seed,
            progress=progress,
            threads=threads,
            every=variant.every,
            name=variant.name,
        )
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
