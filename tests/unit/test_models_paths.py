"""Model strings: local paths resolve only under the model roots; listing never loads weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phasescope.config import get_settings
from phasescope.errors import ModelNotFound, PathNotAllowed
from phasescope.models.loading import list_checkpoints, parse_model_spec, resolve_local_path
from tests.helpers import tiny_series


def test_path_outside_roots_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(PathNotAllowed, match="outside the configured model roots"):
        resolve_local_path(str(outside))


def test_symlink_out_of_a_root_is_refused(isolated_data_dir: Path, tmp_path: Path) -> None:
    root = isolated_data_dir / "models"
    root.mkdir(parents=True)
    target = tmp_path / "secret"
    target.mkdir()
    os.symlink(target, root / "link")
    with pytest.raises(PathNotAllowed):
        resolve_local_path(str(root / "link"))
    with pytest.raises(PathNotAllowed):
        resolve_local_path("link")
    with pytest.raises(PathNotAllowed):
        resolve_local_path("../../../etc")


def test_relative_and_absolute_paths_under_a_configured_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "my-models"
    tiny_series(root / "run-a", steps=(0, 5, 9))
    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(root))
    get_settings.cache_clear()
    assert resolve_local_path("run-a") == (root / "run-a").resolve()
    ref = parse_model_spec(str(root / "run-a"))
    assert ref.kind == "series"
    assert list_checkpoints(ref) == [0, 5, 9]


def test_unknown_zoo_and_missing_dir() -> None:
    with pytest.raises(ModelNotFound) as info:
        parse_model_spec("zoo:does-not-exist")
    assert "zoo:induction-2l" in info.value.choices
    with pytest.raises(ModelNotFound):
        resolve_local_path("no-such-model")


def test_listing_never_reads_weights(isolated_data_dir: Path) -> None:
    series = isolated_data_dir / "models" / "s"
    tiny_series(series, steps=(0, 1))
    # Corrupt the weights: listing must still work because it reads only the manifest.
    for f in series.glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    assert list_checkpoints(str(series)) == [0, 1]


def test_written_files_are_readable_by_others(isolated_data_dir: Path) -> None:
    """Series and store files must not be owner-only (a shared volume serves API and workers)."""
    series = isolated_data_dir / "models" / "perm"
    tiny_series(series, steps=(0,))
    umask = os.umask(0o022)
    try:
        for f in [series / "manifest.json", *series.glob("*.safetensors")]:
            assert f.stat().st_mode & 0o044 == 0o044, oct(f.stat().st_mode)
    finally:
        os.umask(umask)
