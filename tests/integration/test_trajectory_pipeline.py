"""Training dynamics end to end: real RQ workers run the trajectory per checkpoint and the series job
after every checkpoint job; run_local on the trained zoo:induction-2l gives the same quantities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import redis
from rq.job import Job, JobStatus

from phasescope.measures.registry import get_measure
from phasescope.schemas import AnalysisRequest, InputSpec, MeasureParams
from tests.helpers import tiny_series
from tests.integration.service import FAST, WorkerProcess, wait_for

MEASURES = ["trajectory", "trajectory_pca"]
PARAMS = {"heavy_prompts": 2, "landscape_points": 3}
INPUTS = {"n_prompts": 4, "seq_len": 16}


def _declared(name: str) -> set[str]:
    return {q.name for q in get_measure(name).quantities}


def _record(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"phasescope.part"])


def test_workers_run_the_series_job_after_every_checkpoint_job(
    tmp_path: Path, redis_server: object, isolated_data_dir: Path
) -> None:
    from backend.deps import JOB_FUNCTION
    from phasescope.analysis.run import run_local
    from phasescope.config import get_settings
    from phasescope.service.queue import status, submit
    from phasescope.service.store import ResultStore

    steps = tiny_series(isolated_data_dir / "models" / "tiny", steps=(0, 10, 30, 40))
    settings = get_settings()
    conn = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    store = ResultStore(settings.store_dir)
    request = AnalysisRequest(model="tiny", measures=MEASURES, inputs=INPUTS, params=PARAMS)
    aid, finished = submit(request, conn, store, settings, job_function=JOB_FUNCTION)
    assert not finished
    # One job per checkpoint without the series measure, and the series job deferred behind all of them.
    series = Job.fetch(f"{aid}-series", connection=conn)
    assert series.get_status() == JobStatus.DEFERRED and series.kwargs["step"] is None
    assert series.kwargs["measures"] == ["trajectory_pca"]
    dependencies = {d.decode() if isinstance(d, bytes) else d for d in series.dependency_ids}
    assert dependencies == {f"{aid}-{s}" for s in steps}
    assert all(Job.fetch(f"{aid}-{s}", connection=conn).kwargs["measures"] == ["trajectory"] for s in steps)
    waiting = status(store, aid, conn, settings)
    assert waiting["status"] == "queued" and waiting["progress"]["queued"] == len(steps) + 1

    env = {"PHASESCOPE_DATA_DIR": str(isolated_data_dir), "REDIS_URL": redis_server.url, **FAST}  # type: ignore[attr-defined]
    worker = WorkerProcess(env, tmp_path / "logs", "trajectory").start()
    try:
        wait_for(lambda: store.is_finished(aid), 240, f"the analysis to finish: {worker.tail()}")
    finally:
        worker.stop()
    done = status(store, aid, conn, settings)
    assert done["status"] == "finished" and done["progress"]["done"] == len(steps)
    # The series part came last: after every checkpoint's part, and its job after theirs.
    parts = store.root / aid / "parts"
    series_record = _record(parts / "series.parquet")
    step_records = [_record(parts / f"{s:09d}.parquet") for s in steps]
    assert series_record["finished_at"] >= max(r["finished_at"] for r in step_records)
    series = Job.fetch(f"{aid}-series", connection=conn)
    step_jobs = [Job.fetch(f"{aid}-{s}", connection=conn) for s in steps]
    assert series.get_status() == JobStatus.FINISHED
    assert series.started_at >= max(j.ended_at for j in step_jobs)

    table = store.results(aid)
    for name in MEASURES:
        assert set(table.loc[table["measure"] == name, "quantity"]) == _declared(name)
    assert set(table.loc[table["quantity"] == "pca_checkpoint_loss", "checkpoint"]) == set(steps)
    # The worker read the neighbours from their files; run_local kept them from its loop: same numbers.
    local, _ = run_local("tiny", steps, MEASURES, InputSpec(**INPUTS), MeasureParams(**PARAMS))
    keys = ["measure", "quantity", "checkpoint", "layer", "head", "matrix", "index", "x", "y"]

    def canonical(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[[*keys, "value"]].sort_values(keys, na_position="first").reset_index(drop=True)

    ours, theirs = canonical(table), canonical(local)
    assert ours[keys].astype(str).equals(theirs[keys].astype(str))
    np.testing.assert_allclose(ours["value"], theirs["value"].astype("float32"), rtol=1e-5, atol=1e-6)

    # A trajectory depends on its neighbours' weights, which the analysis named: it is reused.
    again = AnalysisRequest(model="tiny", measures=["trajectory"], inputs=INPUTS, params=PARAMS)
    other, finished = submit(again, conn, store, settings, job_function=JOB_FUNCTION)
    assert other != aid and finished  # every checkpoint from the reuse cache, no job
    reused = store.results(other)
    assert len(reused) == int((table["measure"] == "trajectory").sum())
    conn.close()


def test_run_local_on_the_trained_induction_series(zoo_induction_2l: str) -> None:
    from phasescope.analysis.run import run_local
    from phasescope.models.loading import list_checkpoints

    model = zoo_induction_2l
    steps = list_checkpoints(model)[::4]  # 11 of the 41 checkpoints, 0 to 1000
    params = MeasureParams(heavy_prompts=8, landscape_points=5)
    table, _ = run_local(model, steps, MEASURES, InputSpec(n_prompts=16), params)
    for name in MEASURES:
        assert set(table.loc[table["measure"] == name, "quantity"]) == _declared(name)
    total = table[table["quantity"] == "total_distance_from_init"].set_index("checkpoint")["value"]
    assert total.loc[steps[0]] == 0 and total.loc[steps[-1]] > total.loc[steps[1]] > 0
    ratio = (
        table[table["quantity"] == "pca_explained_variance_ratio"].sort_values("index")["value"].to_numpy()
    )
    assert 0 < ratio[1] <= ratio[0] and ratio.sum() <= 1 + 1e-6
    own = table[table["quantity"] == "pca_checkpoint_loss"].set_index("checkpoint")["value"]
    assert own.loc[steps[0]] > 3.5 and own.loc[steps[-1]] < 1.5  # the induction task is learnt
    heads = table[table["quantity"] == "head_kinetic_energy"]
    assert set(heads["layer"]) == {0, 1} and set(heads["head"]) == {0, 1, 2, 3}
    # The induction heads move fastest while they form (the transition is at steps 400-600): the
    # layer-1 heads' kinetic energy over 400 → 500 is its largest, well above the steps around it.
    layer1 = heads[heads["layer"] == 1].dropna(subset=["value"]).groupby("checkpoint")["value"].sum()
    assert layer1.idxmax() == 500
    assert layer1.loc[500] > 1.5 * max(layer1.loc[400], layer1.loc[600])
