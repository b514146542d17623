"""The results store's in-memory table cache never serves a stale or deleted result."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from phasescope.errors import NotFound
from phasescope.service.store import ResultStore

AID = "0123456789abcdef01234567"


def _part(step: int, value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "measure": ["loss"],
            "checkpoint": [step],
            "layer": [-1],
            "head": [-1],
            "quantity": ["loss"],
            "value": [value],
        }
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


def test_measure_and_quantity_lookups_match_a_plain_filter(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    rows = []
    for step in (0, 10, 20):
        for measure, quantity in (
            ("loss", "loss"),
            ("heads", "induction_score"),
            ("heads", "prev_token_score"),
            ("thermo", "entropy"),
        ):
            rows.append(
                {
                    "measure": measure,
                    "checkpoint": step,
                    "layer": 1,
                    "head": 0,
                    "quantity": quantity,
                    "value": float(step + len(quantity)),
                }
            )
    table = pd.DataFrame(rows)
    for step in (0, 10):
        store.write_part(AID, step, table[table["checkpoint"] == step])

    def plain(frame: pd.DataFrame, measure: str | None, quantity: str | None) -> list[tuple]:
        keep = pd.Series(True, index=frame.index)
        if measure:
            keep &= frame["measure"] == measure
        if quantity:
            keep &= frame["quantity"] == quantity
        return sorted(
            map(tuple, frame[keep][["measure", "checkpoint", "quantity", "value"]].astype(str).values)
        )

    cases = [
        ("heads", None),
        (None, "entropy"),
        ("heads", "induction_score"),
        ("loss", "entropy"),
        (None, None),
    ]
    for finished in (False, True):
        if finished:
            store.write_part(AID, 20, table[table["checkpoint"] == 20])
            store.finalize(AID, {"status": "finished"})
        whole = store.results(AID)
        for measure, quantity in cases:
            got = store.results(AID, measure=measure, quantity=quantity)
            assert plain(got, None, None) == plain(whole, measure, quantity), (finished, measure, quantity)
    assert len(store.results(AID, measure="loss", quantity="entropy")) == 0
    assert list(store.results(AID, measure="heads")["checkpoint"]) == [
        0,
        0,
        10,
        10,
        20,
        20,
    ]  # table order kept


def test_tables_over_the_row_budget_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ResultStore, "CACHED_ROWS", 2)
    store = ResultStore(tmp_path)
    small, big = "a" * 24, "b" * 24
    store.write_part(small, 0, _part(0, 1.0))
    store.finalize(small, {"status": "finished"})
    store.write_part(big, 0, pd.concat([_part(0, 2.0), _part(0, 3.0), _part(0, 4.0)]))
    store.finalize(big, {"status": "finished"})
    assert store.results(small) is store.results(small)
    assert store.results(big) is not store.results(big)  # read from disk each time
    assert sorted(store.results(big)["value"]) == [2.0, 3.0, 4.0]
    assert len(store._tables) == 1
