"""Every file read under a model root must resolve inside a model root, symlinks included.

``models.resolve_local_path`` resolves the model *directory* before checking it, but the files in
it are opened by name: a ``step_000010.safetensors`` or ``config.json`` inside a root that is a
symlink to a file elsewhere would otherwise be read (and its bytes, or an error quoting them, could
reach a user). So each file is resolved and checked before it is opened, by us or by transformers,
which opens a directory's files itself. A link to a file inside any root is fine (a series that
shares a checkpoint with another one).

Only metadata is read here (``resolve``, ``iterdir``): no file contents, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from phasescope.errors import PathNotAllowed

__all__ = ["check_directory_files", "resolve_inside_roots"]


def _inside(real: Path, roots: Sequence[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def resolve_inside_roots(path: Path, roots: Sequence[Path], *, model: str) -> Path:
    """The real path of ``path``, or PathNotAllowed when it (or a link on the way) leads out of the roots.

    Args:
        path: a file or directory under a model directory.
        roots: the real model roots (``Settings.allowed_roots``).
        model: how the user named the model, for the message (never an absolute server path).

    Raises:
        PathNotAllowed: the resolved path lies outside every root.
    """
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise PathNotAllowed(
            f"{model}: {path.name} cannot be resolved ({type(exc).__name__})", field="model"
        ) from exc
    if not _inside(real, roots):
        raise PathNotAllowed(
            f"{model}: {path.name} is a link to a file outside the model roots; copy the file into the "
            "model directory or add the directory it lives in to PHASESCOPE_MODEL_ROOTS",
            field="model",
            model=model,
        )
    return real


def check_directory_files(directories: Iterable[Path], roots: Sequence[Path], *, model: str) -> None:
    """Check each directory and every file (or link) directly in it against the roots.

    Transformers opens a local model directory's top-level files itself (config, weights, shards,
    tokenizer), so every one of them is checked before the directory is handed over.

    Args:
        directories: the model directory (and, for a Trainer step, the series root with its tokenizer).
        roots: the real model roots.
        model: the model directory's name, for the message.

    Raises:
        PathNotAllowed: a directory or file resolves outside every root.
    """
    for directory in directories:
        resolve_inside_roots(directory, roots, model=model)
        for entry in directory.iterdir():
            if entry.is_symlink() or entry.is_file():
                resolve_inside_roots(entry, roots, model=model)
