"""The results store's in-memory table cache never serves a stale or deleted result."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from phasescope.errors import NotFound
from phasescope.store import ResultStore

AID = "0123456789abcdef01234567"


def _part(step: int, value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"measure": ["loss"], "checkpoint": [step], "layer": [-1], "head": [-1], "quantity": ["loss"], "value": [value]}
    )


def test_a_rewritten_result_is_read_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_part(AID, 0, _part(0, 1.5))
    store.finalize(AID, {"status": "finished"})
    first = store.results(AID)
    assert store.results(AID) is first  # served from memory the second time
    assert first["value"].tolist() == [1.5]

    store.write_part(AID, 10, _part(10, 0.25))
    store.finalize(AID, {"status": "finished"})  # a new file (atomic rename): a new identity
    second = store.results(AID)
    assert second is not first
    assert sorted(second["value"].tolist()) == [0.25, 1.5]
    assert store.results_path(AID) == tmp_path / AID / "results.parquet"


def test_a_deleted_result_is_not_served_from_memory(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_part(AID, 0, _part(0, 2.0))
    store.finalize(AID, {"status": "finished"})
    assert len(store.results(AID)) == 1
    store.delete(AID)
    assert store.results_path(AID) is None
    with pytest.raises(NotFound):
        store.results(AID)


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    ids = [f"{i:024x}" for i in range(ResultStore.CACHED_TABLES + 3)]
    for i, aid in enumerate(ids):
        store.write_part(aid, 0, _part(0, float(i)))
        store.finalize(aid, {"status": "finished"})
        assert store.results(aid)["value"].tolist() == [float(i)]
    assert len(store._tables) == ResultStore.CACHED_TABLES
    # The oldest were evicted but are still read correctly from disk.
    os.utime(tmp_path / ids[0] / "results.parquet")
    assert store.results(ids[0])["value"].tolist() == [0.0]
