"""A finished result carries an ETag and Cache-Control and answers If-None-Match with 304; a running
one is never cached (real API process, real Redis, results written through the store)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from phasescope.measures.tables import tidy
from phasescope.schemas import AnalysisRequest
from phasescope.service.store import ResultStore

FINISHED = "0000000000000000000000f1"
RUNNING = "0000000000000000000000e1"


def _part(step: int) -> Any:
    values = np.full((2, 2), 0.1 + step / 100)
    part = tidy("heads", "induction_score", values, ("layer", "head"), checkpoint=step)
    # An interval on each row (docs/api.md: the answers carry se, ci_lo, ci_hi as columns).
    return part.assign(se=0.01 + step / 1000, ci_lo=part["value"] - 0.02, ci_hi=part["value"] + 0.03)


def _write(store: ResultStore, aid: str, steps: list[int], written: list[int]) -> None:
    request = AnalysisRequest(model="tl:pythia-160m", measures=["heads"])
    store.save_request(aid, request, {"steps": steps, "weights": {}})
    for step in written:
        store.write_part(aid, step, _part(step))


def test_finished_results_are_cacheable_and_running_ones_are_not(data_dir: Path, start_stack: Any) -> None:
    from phasescope.service.queue import finalize

    store = ResultStore(data_dir / "results")
    _write(store, FINISHED, [0, 10], [0, 10])
    assert finalize(store, FINISHED, None)
    _write(store, RUNNING, [0, 10], [0])  # one checkpoint of two: still running
    stack = start_stack(workers=0)
    base = f"{stack.url}/api/v1/analyses"
    query = {"measure": "heads", "quantity": "induction_score"}
    with httpx.Client(timeout=30) as http:
        first = http.get(f"{base}/{FINISHED}/results", params=query)
        assert first.status_code == 200 and first.json()["rows"] == 8
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
        assert (
            "max-age=" in first.headers["cache-control"] and "no-store" not in first.headers["cache-control"]
        )

        again = http.get(f"{base}/{FINISHED}/results", params=query, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert (
            again.headers["etag"] == etag and again.headers["cache-control"] == first.headers["cache-control"]
        )
        # A list of tags, or a weak one, matches too; another tag does not.
        listed = http.get(
            f"{base}/{FINISHED}/results", params=query, headers={"If-None-Match": f'"other", W/{etag}'}
        )
        assert listed.status_code == 304
        other = http.get(f"{base}/{FINISHED}/results", params=query, headers={"If-None-Match": '"other"'})
        assert other.status_code == 200 and other.content == first.content

        # Another query is another representation: another tag.
        one = http.get(f"{base}/{FINISHED}/results", params={**query, "checkpoint": 10})
        assert one.status_code == 200 and one.json()["rows"] == 4
        assert one.headers["etag"] != etag
        csv = http.get(f"{base}/{FINISHED}/results", params={**query, "format": "csv"})
        assert csv.headers["etag"] not in (etag, one.headers["etag"])
        # The uncertainty columns travel in every format, with their values (float32 as stored).
        frames = {
            "csv": pd.read_csv(io.StringIO(csv.text)),
            "parquet": pd.read_parquet(
                io.BytesIO(
                    http.get(f"{base}/{FINISHED}/results", params={**query, "format": "parquet"}).content
                )
            ),
            "whole file": pd.read_parquet(
                io.BytesIO(http.get(f"{base}/{FINISHED}/results", params={"format": "parquet"}).content)
            ),
            "json": pd.DataFrame(first.json()["data"]),
        }
        for name, frame in frames.items():
            frame = frame.sort_values(["checkpoint", "layer", "head"])
            assert len(frame) == 8, name
            want_se = np.repeat([0.01, 0.02], 4)
            np.testing.assert_allclose(frame["se"].to_numpy(float), want_se, rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(
                (frame["ci_hi"] - frame["ci_lo"]).to_numpy(float), 0.05, rtol=1e-5, err_msg=name
            )

        running = http.get(f"{base}/{RUNNING}/results", params=query)
        assert running.status_code == 200 and running.json()["rows"] == 4
        assert running.headers["x-phasescope-complete"] == "false"
        assert running.headers["cache-control"] == "no-store" and "etag" not in running.headers
        # If-None-Match on a running analysis is ignored: always the current rows.
        again = http.get(f"{base}/{RUNNING}/results", params=query, headers={"If-None-Match": "*"})
        assert again.status_code == 200 and again.json()["rows"] == 4

    # A finished result recomputed (a new file) gets a new tag: the old one no longer matches.
    store.write_part(FINISHED, 20, _part(20))
    store.finalize(FINISHED, {"status": "finished"})
    with httpx.Client(timeout=30) as http:
        fresh = http.get(f"{base}/{FINISHED}/results", params=query, headers={"If-None-Match": etag})
        assert fresh.status_code == 200 and fresh.json()["rows"] == 12
        assert fresh.headers["etag"] != etag
