"""A bounded HTTP load generator, run as its own process so it never shares the API's interpreter.

    python -m benchmarks.load URL [--concurrency N] [--duration S] [--warmup S] [--method GET|POST]
                                  [--json BODY]

``N`` threads, each with its own keep-alive ``httpx.Client``, send requests back to back for ``S``
seconds (after ``--warmup`` seconds whose requests are not counted) and record every latency; on a
slow or loaded machine they go on past ``S`` until ``--min-requests`` have been counted, so a window
never ends empty (the throughput divides by the window actually measured). Prints
one JSON object: requests, errors (non-2xx or transport errors), p50/p90/p99/mean/max latency in
seconds, throughput (requests per second of the measured window) and the response size.

Python threads share one GIL: on a small machine the generator itself costs CPU that the server
would otherwise have. The figures are therefore a lower bound of what the API can serve, measured
the same way for every endpoint (which is what the ratios compare).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import httpx

__all__ = ["main", "percentile"]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 · n), at least 1
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _worker(
    url: str,
    method: str,
    body: object,
    window: tuple[float, float, int],
    out: list,
    errors: list,
    sizes: list,
) -> None:
    start, stop, min_requests = window
    with httpx.Client(timeout=30.0) as client:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop and len(out) + len(errors) >= min_requests:
                return
            try:
                response = client.request(method, url, json=body)
                ok = 200 <= response.status_code < 300
                size = len(response.content)
            except httpx.HTTPError:
                ok, size = False, 0
            t1 = time.perf_counter()
            if t0 >= start:  # warm-up requests are not counted
                (out if ok else errors).append(t1 - t0)
                sizes.append(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted requests first")
    parser.add_argument("--method", default="GET", choices=["GET", "POST"])
    parser.add_argument("--json", default=None, help="request body (JSON text) for POST")
    parser.add_argument(
        "--min-requests", type=int, default=1, help="measure past the window until this many are counted"
    )
    args = parser.parse_args(argv)
    body = json.loads(args.json) if args.json else None
    latencies: list[float] = []
    errors: list[float] = []
    sizes: list[int] = []
    start = time.perf_counter() + args.warmup
    stop = start + args.duration
    threads = [
        threading.Thread(
            target=_worker,
            args=(args.url, args.method, body, (start, stop, args.min_requests), latencies, errors, sizes),
        )
        for _ in range(args.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = max(time.perf_counter(), stop) - start
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "requests": len(ordered),
                "errors": len(errors),
                "p50": percentile(ordered, 50),
                "p90": percentile(ordered, 90),
                "p99": percentile(ordered, 99),
                "mean": statistics.fmean(ordered) if ordered else float("nan"),
                "max": ordered[-1] if ordered else float("nan"),
                "rps": len(ordered) / measured,
                "bytes": int(statistics.median(sizes)) if sizes else 0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
