"""The store carries the uncertainty columns (se, ci_lo, ci_hi) end to end, reads results written
before they existed as NaN, and leaves per-prompt rows out when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from phasescope.measures.tables import UNCERTAINTY_COLUMNS, concat_tables, tidy
from phasescope.service.store import ResultStore, read_table, table_to_parquet_bytes

AID = "0000000000000000000000c1"


def _part(step: int) -> pd.DataFrame:
    rng = np.random.default_rng(step)
    score = tidy("heads", "induction_score", rng.random((2, 3)), ("layer", "head"), checkpoint=step)
    score["se"] = rng.random(6) / 10
    score["ci_lo"] = score["value"] - 0.1
    score["ci_hi"] = score["value"] + 0.2
    per_prompt = tidy(
        "heads", "induction_score_prompt", rng.random((2, 3, 4)), ("layer", "head", "index"), checkpoint=step
    )
    loss = tidy("loss", "loss", np.asarray(3.0 - step / 100), (), checkpoint=step)  # no interval
    return concat_tables([score, per_prompt, loss])


def test_uncertainty_columns_round_trip_as_float32(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    parts = {step: _part(step) for step in (0, 10)}
    for step, part in parts.items():
        store.write_part(AID, step, part)
    running = store.results(AID, quantity="induction_score")  # from the parts
    store.finalize(AID, {"status": "finished"})
    path = store.results_path(AID)
    assert path is not None
    schema = pq.read_schema(path)
    assert all(str(schema.field(c).type) == "float" for c in UNCERTAINTY_COLUMNS)  # float32 on disk
    finished = store.results(AID, quantity="induction_score")
    for got in (running, finished):
        want = pd.concat([p[p["quantity"] == "induction_score"] for p in parts.values()])
        for column in UNCERTAINTY_COLUMNS:
            assert got[column].dtype == np.float32
            np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-6)
    loss = store.results(AID, measure="loss")
    assert len(loss) == 2 and loss[list(UNCERTAINTY_COLUMNS)].isna().all().all()  # no interval: NaN


def test_a_table_stored_before_the_columns_existed_reads_with_nan(tmp_path: Path) -> None:
    old = tidy("loss", "loss", np.asarray(2.5), (), checkpoint=5)
    assert not set(UNCERTAINTY_COLUMNS) & set(old.columns)
    parts = tmp_path / AID / "parts"
    parts.mkdir(parents=True)
    old.to_parquet(parts / f"{5:09d}.parquet", index=False)  # as an older phasescope wrote it
    got = read_table(parts / f"{5:09d}.parquet")
    assert got["value"].tolist() == [2.5]
    assert got[list(UNCERTAINTY_COLUMNS)].isna().all().all()
    store = ResultStore(tmp_path)
    table = store.finalize(AID, {"status": "finished"})
    assert len(table) == 1
    assert store.results(AID)[list(UNCERTAINTY_COLUMNS)].isna().all().all()
    # What is written now always has the columns (NaN where a row has none).
    names = pq.read_schema(pa.BufferReader(table_to_parquet_bytes(old))).names
    assert set(UNCERTAINTY_COLUMNS) <= set(names)


def test_per_prompt_rows_are_left_out_when_asked(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_part(AID, 0, _part(0))
    for stage in ("running", "finished"):
        if stage == "finished":
            store.write_part(AID, 10, _part(10))
            store.finalize(AID, {"status": "finished"})
        every = store.results(AID, measure="heads")
        lean = store.results(AID, measure="heads", prompts=False)
        assert set(every["quantity"]) == {"induction_score", "induction_score_prompt"}, stage
        assert set(lean["quantity"]) == {"induction_score"}, stage
        assert len(store.results(AID, prompts=False)) == len(store.results(AID)) - (
            (every["quantity"] == "induction_score_prompt").sum()
        )
        # Naming the per-prompt quantity asks for it.
        named = store.results(AID, quantity="induction_score_prompt", prompts=False)
        assert len(named) == (every["quantity"] == "induction_score_prompt").sum() > 0, stage
