"""Benchmark 3: latency and throughput of cached results served by the real API, loaded from another process.

A real deployment (embedded Redis, one worker, the API + dashboard server) analyses a series once;
then ``benchmarks.load`` — a separate process on loopback — sends requests back to back to each
endpoint, first one at a time (latency: p50, p99), then from several threads at once (throughput).
Every endpoint is compared with the readiness check (``/health/ready``: one Redis ping and a look at
the store), the floor of what any request through this server costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Row
from benchmarks.services import prepare_model, running_stack, wait_finished

__all__ = ["SIZES", "run"]

BENCHMARK = "api"

# size -> (checkpoint selection, measured seconds per endpoint, warm-up seconds, concurrencies)
SIZES: dict[str, tuple[object, float, float, tuple[int, ...]]] = {
    "toy": ("all", 0.5, 0.2, (1, 4)),
    "quick": ({"start": 0, "every": 4}, 3.0, 1.0, (1, 8)),
    "full": ("all", 8.0, 2.0, (1, 8)),
}


def _endpoints(aid: str) -> list[tuple[str, str, str, object]]:
    """(name, method, path, body) of what is measured; the first is the reference."""
    base = f"/api/v1/analyses/{aid}"
    return [
        ("readiness `GET /health/ready`", "GET", "/api/v1/health/ready", None),
        ("status `GET /analyses/{id}`", "GET", base, None),
        (
            "one curve: `results?measure=heads&quantity=induction_score&layer=1`",
            "GET",
            f"{base}/results?measure=heads&quantity=induction_score&layer=1",
            None,
        ),
        ("one measure: `results?measure=thermo` (JSON)", "GET", f"{base}/results?measure=thermo", None),
        ("whole table: `results?format=parquet`", "GET", f"{base}/results?format=parquet", None),
    ]


def _load(url: str, method: str, body: object, concurrency: int, duration: float, warmup: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.load",
        url,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--method",
        method,
    ]
    if body is not None:
        cmd += ["--json", json.dumps(body)]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, cwd=root, env=env, timeout=duration + 120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def run(size: str = "full") -> list[Row]:
    """Start a deployment, analyse a series once, then load every endpoint from a second process."""
    from phasescope.service.client import Client

    selection, duration, warmup, concurrencies = SIZES[size]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="phasescope-bench-api-") as tmp:
        data_dir = Path(tmp)
        model = prepare_model(data_dir, size)
        # The launcher's own worker count: the analysis is set-up here, not what is measured.
        # The resubmission is measured as throughput, so this one client's write rate limit is lifted.
        unlimited = {"PHASESCOPE_WRITE_BURST": "1000000000", "PHASESCOPE_WRITE_RATE_PER_MIN": "1e12"}
        with running_stack(data_dir, workers=0, env=unlimited) as url, Client(url, timeout=120) as client:
            state = client.submit(model, checkpoints=selection)
            state = wait_finished(client, state["id"])
            aid = state["id"]
            n_ckpt = state["progress"]["total"]
            endpoints = _endpoints(aid)
            # A resubmission of the same request is answered from the finished result (content-addressed).
            submit_body = {"model": model, "checkpoints": selection}
            endpoints.append(
                ("resubmit, cached: `POST /analyses` (200)", "POST", "/api/v1/analyses", submit_body)
            )
            for concurrency in concurrencies:
                reference = None
                for name, method, path, body in endpoints:
                    stats = _load(url + path, method, body, concurrency, duration, warmup)
                    if stats["errors"] or not stats["requests"]:
                        raise RuntimeError(
                            f"{name}: {stats['errors']} errors of {stats['requests']} requests"
                        )
                    reference = reference or stats
                    rows.append(
                        Row(
                            BENCHMARK,
                            f"{model}, {n_ckpt} checkpoints analysed, {concurrency} client thread(s)",
                            name,
                            stats["p50"],
                            None,
                            stats["requests"],
                            stats["p50"] / reference["p50"],
                            "readiness",
                            None,
                            f"p50 {stats['p50'] * 1e3:.1f} ms, p99 {stats['p99'] * 1e3:.1f} ms, "
                            f"{stats['rps']:.0f} req/s, response {_kib(stats['bytes'])}",
                            extra=stats,
                        )
                    )
    return rows
