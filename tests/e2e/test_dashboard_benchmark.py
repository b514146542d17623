"""Benchmark 6 (benchmarks/dashboard.py) at toy size: its fixture is a finished analysis the real
service serves, and every render it times is measured in the page (positive, finite, from the probe)."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


def test_dashboard_benchmark_measures_every_view() -> None:
    from benchmarks.dashboard import SIZES, STEP_TABS, TABS, run

    rows = run("toy")
    variants = [r.variant for r in rows]
    for tab in TABS:
        assert any(v.startswith(f"first render: {tab} tab") for v in variants), tab
    for tab in STEP_TABS:
        row = next(r for r in rows if r.variant == f"checkpoint slider: one step ({tab})")
        assert len(row.extra["seconds"]) == SIZES["toy"][0]
    for row in rows:
        assert row.benchmark == "dashboard" and math.isfinite(row.seconds), row
        if row.variant.startswith(("first render", "checkpoint slider", "layer change", "head change")):
            # Measured in the page from the action (or navigation start) to the last change drawn.
            assert 0 < row.seconds < 300, row
    first = [r for r in rows if r.variant.startswith("one quantity, first request")]
    assert len(first) == 1 and first[0].seconds > 0
    api = [r for r in rows if r.variant.startswith("one quantity") and r not in first]
    assert len(api) == 2 * len(SIZES["toy"][3])
    assert all(r.extra["errors"] == 0 and r.extra["requests"] > 0 for r in api)
