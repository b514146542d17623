"""The acceptance sweep: all 41 checkpoints of zoo:induction-2l, fanned out over two real workers."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from phasescope.service.client import Client

pytestmark = pytest.mark.slow

MEASURES = ["entropy", "heads", "loss", "spectra"]


def test_all_41_checkpoints_with_two_workers(start_stack, zoo_induction_2l):
    stack = start_stack(workers=2)
    with Client(stack.url, timeout=180) as api:
        steps = api.checkpoints(zoo_induction_2l)
        assert len(steps) == 41
        t0 = time.perf_counter()
        submitted = api.submit(zoo_induction_2l, checkpoints="all", measures=MEASURES)
        assert submitted["progress"]["total"] == 41
        state = api.wait(submitted["id"], timeout=600, poll=0.5, progress=False)
        wall = time.perf_counter() - t0
        assert state["status"] == "finished", (state, stack.logs())
        table = api.results(submitted["id"])
        heads = api.results(submitted["id"], measure="heads", quantity="induction_score")
    print(f"\n41 checkpoints x {MEASURES} on 2 workers: {wall:.1f} s")
    assert sorted(table["checkpoint"].unique()) == steps
    assert set(table["measure"]) == set(MEASURES)
    # Both workers took part: the sweep was spread, not run by one.
    summary = (stack.data_dir / "results" / submitted["id"] / "summary.json").read_text()
    assert all(w.name in summary for w in stack.workers)
    # The physics came through the plumbing: induction heads form during training.
    best = heads.groupby("checkpoint")["value"].max()
    assert best.loc[steps[-1]] > best.loc[steps[0]] + 0.3
    assert isinstance(table, pd.DataFrame)
    # The finished status carries the findings: the loss transition of the reference series.
    findings = state["findings"]
    loss = [t for t in findings["transitions"] if t["quantity"] == "loss"]
    assert len(loss) == 1 and 350 <= loss[0]["step"] <= 650, findings
    assert "induction transition" in findings["summary"], findings["summary"]
