"""The benchmark code runs at toy size and returns well-formed rows (speed itself lives in benchmarks/)."""

from __future__ import annotations

import importlib
import math

import pytest

from benchmarks.common import ROW_FIELDS, Row
from benchmarks.run import BENCHMARKS, MARKER, merge, render, title

# Third-party noise from the libraries the benchmarks compare against.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

OFFLINE = ["activations", "weights", "landscape", "sweep"]
# These start real deployments (embedded Redis, RQ workers, the API) on a tiny random series; the
# API benchmark has its own test below.
SERVICES = ["scaleout"]


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


@pytest.mark.parametrize("name", OFFLINE + SERVICES)
def test_benchmark_runs_at_toy_size(name: str) -> None:
    module = importlib.import_module(BENCHMARKS[name][0])
    kwargs = {"device": "cpu"} if "device" in module.run.__code__.co_varnames else {}
    rows = module.run("toy", **kwargs)
    _check(rows, name)
    sections = render({name: rows}, {"cpu": "test"}, "python -m benchmarks.run --only " + name, {}, 1.0)
    assert list(sections) == [title(name)] and rows[0].variant in sections[title(name)]


def test_api_benchmark_measures_every_endpoint_without_errors() -> None:
    from benchmarks import api

    rows = api.run("toy")
    _check(rows, "api")
    concurrencies = api.SIZES["toy"][3]
    assert len(rows) == len(concurrencies) * 6
    for row in rows:
        stats = row.extra
        assert stats["errors"] == 0 and stats["requests"] > 0
        assert 0 < stats["p50"] <= stats["p99"] <= stats["max"]
        assert stats["bytes"] > 0
    # The finished result really is served: the one-curve response holds data, the readiness one does not.
    by_variant = {row.variant: row.extra["bytes"] for row in rows}
    assert by_variant[rows[2].variant] > by_variant[rows[0].variant]


def test_load_percentiles() -> None:
    from benchmarks.load import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert math.isnan(percentile([], 50))


def test_a_partial_run_replaces_only_its_own_sections() -> None:
    from benchmarks.common import Row

    def rows(name: str, variant: str) -> list[Row]:
        return [Row(name, "case", variant, 1.0, 1.0, 1, 1.0, "itself")]

    intro = "# Benchmarks\n\nHand-written introduction.\n"
    first = merge(
        intro,
        render(
            {"activations": rows("activations", "old A"), "landscape": rows("landscape", "old L")},
            {"cpu": "x"},
            "cmd 1",
            {},
            1.0,
        ),
    )
    assert first.startswith(intro.rstrip()) and MARKER in first
    second = merge(first, render({"landscape": rows("landscape", "new L")}, {"cpu": "x"}, "cmd 2", {}, 1.0))
    assert "old A" in second and "new L" in second and "old L" not in second
    assert second.index(title("activations")) < second.index(title("landscape"))
    # A failure does not wipe earlier figures; an accelerator run gets its own section.
    third = merge(second, render({}, {}, "cmd 3", {"activations": "no GPU"}, 1.0))
    assert "old A" in third and "Not run" not in third
    fourth = merge(third, render({"activations": rows("activations", "gpu A")}, {}, "cmd 4", {}, 1.0, "cuda"))
    assert "old A" in fourth and "gpu A" in fourth
    assert (
        fourth.index(title("activations"))
        < fourth.index(title("activations", "cuda"))
        < fourth.index(title("landscape"))
    )
