"""A file inside a model root that is a symlink to a file outside every root is never read.

Checked for each local kind (our series, a Hugging Face directory, a Trainer series with
``checkpoint-<step>/`` folders): at parse time (listing, fingerprinting), at load time (the file
about to be opened, in case it was swapped after parsing), and over real HTTP, where the answer is a
403 that names no server path. A link to a file inside a root still loads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from phasescope.config import Settings
from phasescope.errors import PathNotAllowed
from phasescope.models.hf import load_hf_directory
from phasescope.models.loading import list_checkpoints, load_model, parse_model_spec
from phasescope.models.series import checkpoint_filename, load_series_state_dict, read_manifest
from tests.helpers import tiny_series
from tests.integration.service import http


def _gpt2(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def _link(file: Path, target: Path) -> None:
    """Replace ``file`` by a symlink to ``target`` (a real copy of it, so only the link is wrong)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(file, target)
    os.symlink(target, file)


@pytest.fixture
def layout(data_dir: Path, tmp_path: Path) -> tuple[Settings, Path, Path]:
    """A model root (<data_dir>/models) and a directory outside every root."""
    root = data_dir / "models"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    return Settings(data_dir=data_dir), root, outside


def test_series_checkpoint_linked_outside_is_refused_inside_is_loaded(layout) -> None:
    settings, root, outside = layout
    tiny_series(root / "good", steps=(0, 10))
    tiny_series(root / "bad", steps=(0, 10))
    shared = root / "shared" / "step.safetensors"  # inside the root, but not in the series
    _link(root / "good" / checkpoint_filename(10), shared)
    _link(root / "bad" / checkpoint_filename(10), outside / "step.safetensors")

    assert load_model("good", 10, settings=settings).step == 10
    assert list_checkpoints("good", settings) == [0, 10]
    with pytest.raises(PathNotAllowed, match="outside the model roots") as info:
        load_model("bad", 10, settings=settings)
    assert str(outside) not in str(info.value) and str(root) not in str(info.value)
    with pytest.raises(PathNotAllowed):
        list_checkpoints("bad", settings)  # parsing already refuses: nothing in it is read

    # Swapped after parsing: the file about to be opened is checked again.
    ref = parse_model_spec("good", settings)
    os.unlink(root / "good" / checkpoint_filename(10))
    os.symlink(outside / "step.safetensors", root / "good" / checkpoint_filename(10))
    with pytest.raises(PathNotAllowed):
        load_series_state_dict(ref.path, 10, read_manifest(ref.path), roots=settings.allowed_roots)
    with pytest.raises(PathNotAllowed):
        load_model(ref, 10, settings=settings)


@pytest.mark.parametrize("linked", ["model.safetensors", "config.json"])
def test_hf_directory_file_linked_outside_is_refused(layout, linked: str) -> None:
    settings, root, outside = layout
    _gpt2(root / "hf", 0)
    _link(root / "hf" / linked, outside / linked)
    with pytest.raises(PathNotAllowed, match=linked):
        load_model("hf", settings=settings)
    # The load-time check alone (transformers opens every file in the directory itself).
    with pytest.raises(PathNotAllowed, match=linked):
        load_hf_directory(root / "hf", "cpu", roots=settings.allowed_roots)


def test_hf_directory_linked_inside_a_root_loads(layout) -> None:
    settings, root, _ = layout
    hf = _gpt2(root / "hf", 0)
    _link(hf / "model.safetensors", root / "blobs" / "weights.safetensors")
    expected = load_file(root / "blobs" / "weights.safetensors")["transformer.h.0.attn.c_proj.bias"]
    loaded = load_model("hf", settings=settings)
    torch.testing.assert_close(loaded.model.blocks[0].attn.b_O, expected)


def test_trainer_series_checkpoint_linked_outside_is_refused(layout) -> None:
    settings, root, outside = layout
    for step in (10, 20):
        _gpt2(root / "run" / f"checkpoint-{step}", step)
    assert load_model("run", 10, settings=settings).step == 10
    _link(root / "run" / "checkpoint-20" / "model.safetensors", outside / "model.safetensors")
    with pytest.raises(PathNotAllowed, match="model.safetensors"):
        load_model("run", 10, settings=settings)  # the whole series is refused, not only step 20

    # A checkpoint folder that is itself a link to a folder outside.
    os.unlink(root / "run" / "checkpoint-20" / "model.safetensors")
    shutil.move(outside / "model.safetensors", root / "run" / "checkpoint-20" / "model.safetensors")
    shutil.move(root / "run" / "checkpoint-20", outside / "checkpoint-20")
    os.symlink(outside / "checkpoint-20", root / "run" / "checkpoint-20")
    with pytest.raises(PathNotAllowed, match="checkpoint-20"):
        load_model("run", 10, settings=settings)


def test_api_answers_403_without_server_paths(layout, start_stack) -> None:
    _, root, outside = layout
    tiny_series(root / "bad", steps=(0, 10))
    _link(root / "bad" / checkpoint_filename(10), outside / "step.safetensors")
    stack = start_stack(workers=0)
    for response in (
        http.get(f"{stack.url}/api/v1/models/bad/checkpoints"),
        http.post(f"{stack.url}/api/v1/analyses", json={"model": "bad", "measures": ["entropy"]}),
    ):
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["field"] == "model" and "outside" in body["detail"]
        assert str(outside) not in response.text and str(root) not in response.text
