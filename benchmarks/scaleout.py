"""Benchmark 4: one checkpoint sweep through the queue with 1 and 2 workers, and in-process.

The standard analysis of ``zoo:induction-2l`` (every checkpoint, the default measures) is submitted
to a real deployment (embedded Redis, RQ workers, API) and timed from the POST to ``finished`` (the
merged result and its findings written). Each variant gets a fresh data directory, so nothing is
answered from an earlier result. The in-process ``run_local`` (what ``phasescope analyze`` does) is
the baseline: the same work with no queue, no Redis and no HTTP.

The reference is one worker with one torch thread; two workers with one thread each is what
``phasescope up`` starts on a 2-core machine; one worker with a thread per core was the earlier
default and shows what intra-op threads do to this workload. The in-process baseline also runs on
one thread, so its difference to the reference is the cost of the queue, Redis and HTTP.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row
from benchmarks.services import prepare_model, running_stack, wait_finished

__all__ = ["SIZES", "run"]

BENCHMARK = "scaleout"

SIZES: dict[str, object] = {
    "toy": "all",
    "quick": {"start": 0, "every": 4},
    "full": "all",
}


def _local(data_dir: Path, model: str, selection: object) -> tuple[float, float, int]:
    """Wall and CPU seconds of the same analysis in this process: ``run_local`` and the findings."""
    from phasescope.analysis.run import run_local
    from phasescope.config import get_settings
    from phasescope.models.loading import list_checkpoints
    from phasescope.phases.findings import find_transitions
    from phasescope.schemas import AnalysisRequest, select_steps

    previous = os.environ.get("PHASESCOPE_DATA_DIR")
    os.environ["PHASESCOPE_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    try:
        request = AnalysisRequest(model=model, checkpoints=selection)
        w0, c0 = time.perf_counter(), time.process_time()
        steps = select_steps(request.checkpoints, list_checkpoints(model), model)
        table, _ = run_local(model, steps, request.measures, request.inputs, request.params)
        find_transitions(table)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        if previous is None:
            os.environ.pop("PHASESCOPE_DATA_DIR", None)
        else:
            os.environ["PHASESCOPE_DATA_DIR"] = previous
        get_settings.cache_clear()
    return wall, cpu, len(steps)


def _queued(size: str, workers: int, threads: int, selection: object) -> tuple[float, int]:
    from phasescope.service.client import Client

    with tempfile.TemporaryDirectory(prefix="phasescope-bench-scale-") as tmp:
        data_dir = Path(tmp)
        model = prepare_model(data_dir, size)
        with (
            running_stack(data_dir, workers=workers, threads=threads) as url,
            Client(url, timeout=120) as client,
        ):
            t0 = time.perf_counter()
            state = client.submit(model, checkpoints=selection)
            state = wait_finished(client, state["id"])
            return time.perf_counter() - t0, int(state["progress"]["total"])


def run(size: str = "full") -> list[Row]:
    """Time the sweep in-process, then through the queue with 1 and 2 workers."""
    import torch

    selection = SIZES[size]
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="phasescope-bench-local-") as tmp:
            model = prepare_model(Path(tmp), size)
            local_wall, local_cpu, _ = _local(Path(tmp), model, selection)
    finally:
        torch.set_num_threads(threads)
    variants = [(1, 1), (2, 1), (1, cores)] if cores > 1 else [(1, 1)]
    timings = [(w, t, *_queued(size, w, t, selection)) for w, t in variants]
    n_ckpt = timings[0][3]
    case = f"{model}, {n_ckpt} checkpoints, default measures, {cores} cores"
    reference = timings[0][2]
    rows = [
        Row(
            BENCHMARK,
            case,
            "in-process `run_local`, 1 thread",
            local_wall,
            local_cpu,
            1,
            local_wall / reference,
            "1 worker × 1 thread",
            None,
            "no queue, Redis or HTTP; what `phasescope analyze` does",
        )
    ]
    for workers, threads, wall, _ in timings:
        rows.append(
            Row(
                BENCHMARK,
                case,
                f"{workers} worker{'s' if workers > 1 else ''} × {threads} thread{'s' if threads > 1 else ''}",
                wall,
                None,
                1,
                wall / reference,
                "1 worker × 1 thread",
                None,
                f"POST → finished; {n_ckpt / wall:.2f} checkpoints/s; speed-up {reference / wall:.2f}×",
            )
        )
    return rows
