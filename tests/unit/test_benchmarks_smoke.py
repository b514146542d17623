"""The benchmark code runs at toy size and returns well-formed rows (speed itself lives in benchmarks/)."""

from __future__ import annotations

import importlib
import math

import pytest

from benchmarks.common import ROW_FIELDS, Row
from benchmarks.run import BENCHMARKS, MARKER, render

# Third-party noise from the libraries the benchmarks compare against.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

# The API and scale-out benchmarks need running services; they are exercised by `make bench`.
OFFLINE = ["activations", "weights", "landscape"]


def _check(rows: list[Row], name: str) -> None:
    assert rows, f"{name} returned no rows"
    for row in rows:
        assert isinstance(row, Row)
        for field in ROW_FIELDS:
            assert hasattr(row, field)
        assert row.benchmark == name and row.case and row.variant
        assert row.seconds > 0 and math.isfinite(row.seconds), row
        assert row.ratio is None or row.ratio > 0, row
        assert row.cpu_ratio is None or row.cpu_ratio >= 0, row


@pytest.mark.parametrize("name", OFFLINE)
def test_benchmark_runs_at_toy_size(name: str) -> None:
    module = importlib.import_module(BENCHMARKS[name][0])
    rows = module.run("toy", device="cpu")
    _check(rows, name)
    doc = render({name: rows}, {"cpu": "test"}, "python -m benchmarks.run --only " + name, {}, 1.0)
    assert doc.startswith(MARKER) and rows[0].variant in doc
