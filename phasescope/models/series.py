"""Our checkpoint series format: one safetensors file per training step plus a JSON manifest.

Layout of a series directory::

    <series>/manifest.json              SeriesManifest below (config, task recipe, seed, steps, history)
    <series>/step_000025.safetensors    the TransformerLens state dict at step 25

Listing a series reads only the manifest, never weights. Files are written to a temporary name and
renamed, so a crash never leaves a half-written checkpoint or manifest behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from phasescope.errors import CheckpointNotFound, ModelLoadError
from phasescope.service.storage import atomic_write_bytes, commit_temp_file, make_dirs

if TYPE_CHECKING:  # torch and safetensors load lazily: listing a series must not import torch
    import torch

__all__ = [
    "MANIFEST_NAME",
    "SERIES_FORMAT",
    "SeriesManifest",
    "atomic_write_bytes",
    "checkpoint_filename",
    "is_series_dir",
    "load_series_state_dict",
    "read_manifest",
    "write_manifest",
    "write_random_series",
    "write_series_checkpoint",
]

MANIFEST_NAME = "manifest.json"
SERIES_FORMAT = "phasescope.series/1"


class SeriesManifest(BaseModel):
    """What a series directory holds, readable without loading any weights."""

    format: str = SERIES_FORMAT
    name: str
    config: dict[str, Any] = Field(description="HookedTransformerConfig keyword arguments.")
    task: dict[str, Any] = Field(default_factory=dict, description="Data recipe the series was trained on.")
    seed: int = 0
    steps: list[int] = Field(default_factory=list)
    history: list[dict[str, float]] = Field(
        default_factory=list, description="Per-step training record: step, train_loss, eval_loss, ..."
    )
    training: dict[str, Any] = Field(default_factory=dict, description="Optimiser and schedule settings.")


def checkpoint_filename(step: int) -> str:
    """File name of the checkpoint at ``step``."""
    return f"step_{step:06d}.safetensors"


def is_series_dir(path: Path) -> bool:
    """True when ``path`` holds a phasescope series manifest."""
    return (path / MANIFEST_NAME).is_file()


def read_manifest(series_dir: Path) -> SeriesManifest:
    """Read and validate a series manifest (no weights are touched)."""
    path = series_dir / MANIFEST_NAME
    try:
        return SeriesManifest.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"no {MANIFEST_NAME} in {series_dir}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not a valid phasescope manifest: {exc}") from exc


def write_manifest(series_dir: Path, manifest: SeriesManifest) -> None:
    """Write the manifest atomically."""
    payload = json.dumps(manifest.model_dump(mode="json"), indent=1).encode()
    atomic_write_bytes(series_dir / MANIFEST_NAME, payload)


def write_series_checkpoint(series_dir: Path, step: int, state_dict: dict[str, torch.Tensor]) -> Path:
    """Save one step's state dict as safetensors, atomically; returns the file's path."""
    from safetensors.torch import save_file

    path = series_dir / checkpoint_filename(step)
    make_dirs(series_dir)
    fd, tmp = tempfile.mkstemp(dir=series_dir, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # safetensors refuses shared or non-contiguous storage: give it plain copies.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    commit_temp_file(tmp, path)  # flushed, renamed, rename flushed (phasescope.service.storage)
    return path


def write_random_series(series_dir: Path, config: dict[str, Any], steps: list[int], seed: int = 0) -> Path:
    """A series of freshly initialised models, one per step (seeded ``seed + i``): no training.

    A null model with the series layout: what the measures give on random weights of this
    architecture, and a model the tests and benchmarks can write in seconds.

    Args:
        series_dir: where to write it (created).
        config: ``HookedTransformerConfig`` keyword arguments.
        steps: the steps to label the checkpoints with.
        seed: the first checkpoint's torch seed.
    """
    import warnings

    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3.9's own deprecations
        for i, step in enumerate(steps):
            torch.manual_seed(seed + i)
            write_series_checkpoint(
                series_dir, step, HookedTransformer(HookedTransformerConfig(**config)).state_dict()
            )
    write_manifest(
        series_dir, SeriesManifest(name=series_dir.name, config=config, seed=seed, steps=list(steps))
    )
    return series_dir


def load_series_state_dict(
    series_dir: Path,
    step: int,
    manifest: SeriesManifest | None = None,
    *,
    roots: Sequence[Path] | None = None,
) -> dict:
    """Load the state dict at ``step`` from a series directory (safetensors only, never pickle).

    Args:
        series_dir: the series directory.
        step: one of the manifest's steps.
        manifest: the manifest, when already read.
        roots: the real model roots (``Settings.allowed_roots``); when given, the checkpoint file must
            resolve inside one of them (a symlink to a file elsewhere raises PathNotAllowed).
    """
    manifest = manifest or read_manifest(series_dir)
    if step not in manifest.steps:
        raise CheckpointNotFound(
            f"{manifest.name} has no checkpoint at step {step}",
            field="checkpoints",
            choices=manifest.steps,
            model=manifest.name,
            checkpoint=step,
        )
    path = series_dir / checkpoint_filename(step)
    if not path.is_file():
        raise ModelLoadError(f"{path} is listed in the manifest but missing on disk", checkpoint=step)
    if roots is not None:
        from phasescope.models.files import resolve_inside_roots

        path = resolve_inside_roots(path, roots, model=manifest.name)
    from safetensors.torch import load_file

    return load_file(str(path))
