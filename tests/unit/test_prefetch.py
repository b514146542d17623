"""Checkpoints read ahead (phasescope.models.prefetch): same results, fresh weights, bounded, errors late."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from phasescope.analysis.run import run_local
from phasescope.errors import ModelLoadError
from phasescope.models.identity import weights_identity
from phasescope.models.loading import ModelCache, load_model
from phasescope.models.series import checkpoint_filename, load_series_state_dict, write_series_checkpoint
from phasescope.schemas import InputSpec, MeasureParams
from tests.helpers import tiny_series

STEPS = (0, 10, 20, 30)


@pytest.fixture
def series(isolated_data_dir: Path) -> str:
    tiny_series(isolated_data_dir / "models" / "pf", steps=STEPS)
    return "pf"


def _rewrite(directory: Path, step: int, seed: int) -> dict[str, torch.Tensor]:
    """Write other weights (same shapes, so the same file size and header) at ``step``; returns them."""
    old = load_series_state_dict(directory, step)
    generator = torch.Generator().manual_seed(seed)
    new = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in old.items()}
    write_series_checkpoint(directory, step, new)
    return new


def _params_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


def test_run_local_gives_the_same_table_with_and_without_prefetch(series: str) -> None:
    measures = ["entropy", "thermo", "heads", "loss"]
    args = (series, list(STEPS), measures, InputSpec(n_prompts=4), MeasureParams(n_beta=7))
    plain, _ = run_local(*args, prefetch=False)
    ahead, _ = run_local(*args, prefetch=True)
    assert len(plain) > 0 and set(plain["checkpoint"]) == set(STEPS)
    # Bit for bit: the prefetched state dict holds the very numbers the file does.
    assert plain.equals(ahead)
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch")]  # the thread ended


def test_a_sweep_loads_every_later_step_from_the_prefetch(series: str) -> None:
    cache = ModelCache(prefetch=True)
    assert cache.prefetcher is not None
    used = []
    for i, step in enumerate(STEPS):
        loaded = cache.get(series, step)
        used.append(cache.last_prefetched)
        # The weights in the model are the file's, whichever way they came.
        assert loaded.step == step
        assert _params_equal(loaded.model, load_series_state_dict(loaded.ref.path, step))
        if i + 1 < len(STEPS):
            assert cache.prefetch(series, STEPS[i + 1])
    cache.close()
    assert used == [False, True, True, True]
    assert (cache.prefetcher.used, cache.prefetcher.dropped, cache.prefetcher.stale) == (3, 0, 0)


def test_a_checkpoint_rewritten_after_it_was_read_ahead_is_loaded_afresh(
    series: str, isolated_data_dir: Path
) -> None:
    directory = isolated_data_dir / "models" / "pf"
    cache = ModelCache(prefetch=True)
    cache.get(series, 0)
    before = weights_identity(series, [10])[10]
    assert cache.prefetch(series, 10)
    cache.prefetcher.wait()  # the old weights are in memory now
    new = _rewrite(directory, 10, seed=123)
    assert weights_identity(series, [10])[10] != before  # the rewrite is visible to the identity
    loaded = cache.get(series, 10)
    assert not cache.last_prefetched and cache.prefetcher.stale == 1
    assert _params_equal(loaded.model, new)
    cache.close()


def test_a_failed_read_ahead_surfaces_only_when_that_step_is_loaded(
    series: str, isolated_data_dir: Path
) -> None:
    path = isolated_data_dir / "models" / "pf" / checkpoint_filename(20)
    cache = ModelCache(prefetch=True)
    cache.get(series, 10)
    path.unlink()  # listed in the manifest, gone from the disk
    assert cache.prefetch(series, 20)
    cache.prefetcher.wait()  # the read has failed on its thread; nothing was raised here
    with pytest.raises(ModelLoadError, match="missing on disk"):
        cache.get(series, 20)  # the normal load runs again and says what is wrong
    assert cache.prefetcher.failed == 1 and not cache.last_prefetched
    # A read ahead of a step that is never loaded raises nowhere: it is dropped.
    assert cache.prefetch(series, 12345)
    cache.prefetcher.wait()
    assert cache.get(series, 30).step == 30
    assert cache.prefetcher.dropped == 1
    cache.close()


def test_one_checkpoint_ahead_at_most(series: str) -> None:
    cache = ModelCache(prefetch=True)
    assert cache.prefetcher is not None
    cache.get(series, 0)
    assert cache.prefetch(series, 10) and cache.prefetch(series, 20)
    assert cache.prefetcher.pending == (series, 20) and cache.prefetcher.dropped == 1
    assert cache.prefetch(series, 20)  # asking again keeps the same read
    assert cache.prefetcher.dropped == 1
    assert not cache.prefetch(series, 0)  # already in memory: nothing to read
    cache.get(series, 10)  # another step than the one read ahead: loaded from its file, the read dropped
    assert not cache.last_prefetched and cache.prefetcher.pending is None
    assert cache.prefetcher.dropped == 2 and cache.prefetcher.used == 0
    cache.close()


def test_only_series_are_read_ahead_and_a_disabled_cache_reads_nothing(
    series: str, isolated_data_dir: Path
) -> None:
    from phasescope.models.prefetch import Prefetcher

    assert not Prefetcher().start("no-such-model", 0)
    # A Hugging Face model directory builds its model in transformers' loader: not read ahead.
    hf_dir = isolated_data_dir / "models" / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text('{"model_type": "gpt2"}')
    assert not Prefetcher().start("hf", 0)
    cache = ModelCache(prefetch=False)
    assert not cache.prefetch(series, 10) and cache.prefetcher is None
    assert cache.get(series, 10).step == 10 and not cache.last_prefetched


def test_load_model_takes_a_state_dict_read_elsewhere(series: str, isolated_data_dir: Path) -> None:
    state = {k: v + 1.0 for k, v in load_series_state_dict(isolated_data_dir / "models" / "pf", 20).items()}
    loaded = load_model(series, 20, state=state)
    assert _params_equal(loaded.model, state)
