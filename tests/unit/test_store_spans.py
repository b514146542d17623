"""The finished-table index: (measure, quantity, checkpoint) lookups return exactly the filtered rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phasescope.measures.tables import tidy
from phasescope.service.store import ResultStore, _row_spans

AID = "00000000000000000000abcd"


def _part(step: int) -> pd.DataFrame:
    rng = np.random.default_rng(step)
    beta = np.geomspace(0.1, 10, 5)
    frames = [
        tidy("heads", "induction_score", rng.random((2, 3)), ("layer", "head"), checkpoint=step),
        tidy(
            "thermo",
            "entropy",
            rng.random((2, 3, 5)),
            ("layer", "head", "beta"),
            checkpoint=step,
            coords={"beta": beta},
        ),
        tidy("thermo", "beta_star", rng.random((2, 3)), ("layer", "head"), checkpoint=step),
        tidy("loss", "loss", np.asarray(3.0 - step / 100), (), checkpoint=step),
    ]
    return pd.concat(frames, ignore_index=True)


def _finished(tmp_path: Path, steps: list[int]) -> ResultStore:
    store = ResultStore(tmp_path)
    for step in steps:
        store.write_part(AID, step, _part(step))
    store.finalize(AID, {"status": "finished"})
    return store


def test_lookups_equal_the_plain_filters(tmp_path: Path) -> None:
    steps = [0, 10, 20, 40]
    store = _finished(tmp_path, steps)
    table = store.results(AID)
    for measure in (None, "heads", "thermo", "loss"):
        for quantity in (None, "entropy", "beta_star", "loss", "nope"):
            for checkpoint in (None, 0, 20, 40, 99):
                got = store.results(AID, measure=measure, quantity=quantity, checkpoint=checkpoint)
                mask = np.ones(len(table), dtype=bool)
                for column, value in (
                    ("measure", measure),
                    ("quantity", quantity),
                    ("checkpoint", checkpoint),
                ):
                    if value is not None:
                        mask &= (table[column] == value).to_numpy()
                expected = table[mask]
                pd.testing.assert_frame_equal(got, expected)


def test_a_running_analysis_is_filtered_from_its_parts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_part(AID, 0, _part(0))
    store.write_part(AID, 10, _part(10))  # no finalize: running
    got = store.results(AID, measure="thermo", quantity="entropy", checkpoint=10)
    assert len(got) == 2 * 3 * 5
    assert set(got["checkpoint"]) == {10} and set(got["quantity"]) == {"entropy"}


def test_spans_cover_every_row_once_even_when_a_key_is_split() -> None:
    a, b = _part(0), _part(10)
    # The same (measure, quantity, checkpoint) in two places: two spans for that key.
    table = pd.concat([a.iloc[:3], b, a.iloc[3:]], ignore_index=True)
    spans = _row_spans(table)
    assert len(spans[("heads", "induction_score", 0)]) == 2
    covered = sorted(i for runs in spans.values() for start, stop in runs for i in range(start, stop))
    assert covered == list(range(len(table)))
    for (m, q, c), runs in spans.items():
        for start, stop in runs:
            block = table.iloc[start:stop]
            assert (block["measure"] == m).all() and (block["quantity"] == q).all()
            assert (block["checkpoint"] == c).all()
