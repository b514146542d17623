"""Server-side downsampling (frontend/downsample.py) keeps what a figure is read for."""

from __future__ import annotations

import numpy as np

from frontend.downsample import column_indices, line_indices


def test_a_short_line_is_kept_whole() -> None:
    x = np.arange(50.0)
    assert line_indices(x, np.sin(x), max_points=50).tolist() == list(range(50))


def test_a_long_line_keeps_its_ends_extremes_and_marked_steps() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    x = np.arange(n, dtype=float)
    y = rng.normal(0.0, 1.0, n)
    y[7_777] = 50.0  # one spike
    y[12_345] = -50.0  # one dip
    kept = line_indices(x, y, max_points=200, keep_x=[3_001.4, 19_998.0])
    assert len(kept) <= 200 + 2
    assert np.all(np.diff(kept) > 0)  # sorted, no duplicates
    assert {0, n - 1, 7_777, 12_345, 3_001, 19_998} <= set(kept.tolist())
    # Every bucket's extremes survive: the kept range spans the whole line's range.
    assert y[kept].max() == y.max() and y[kept].min() == y.min()


def test_a_step_survives_downsampling() -> None:
    # A transition: a sigmoid in ln(step) from 0 to 1 over 5000 log-spaced steps.
    steps = np.geomspace(1, 1e6, 5000)
    y = 1 / (1 + np.exp(-4 * (np.log(steps) - np.log(3e3))))
    kept = line_indices(steps, y, max_points=100)
    # The kept curve crosses one half within one original point of where the full curve does.
    half_full = steps[np.argmax(y > 0.5)]
    ks, ky = steps[kept], y[kept]
    i = np.argmax(ky > 0.5)
    assert ks[i - 1] <= half_full <= ks[i]
    assert len(kept) <= 102


def test_all_nan_buckets_do_not_fail() -> None:
    x = np.arange(1000.0)
    y = np.full(1000, np.nan)
    kept = line_indices(x, y, max_points=10)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) <= 12


def test_heatmap_columns_keep_the_transition_and_the_cursor() -> None:
    steps = np.arange(0, 2000, dtype=float)  # 2000 checkpoints
    z = np.zeros((6, len(steps)))
    z[2, 1234:] = 1.0  # head 2 switches on at step 1234
    kept = column_indices(steps, z, max_columns=40, keep_x=[500.2])
    assert len(kept) <= 42
    assert {0, 1999, 1234, 500} <= set(kept.tolist())
    assert column_indices(steps[:30], z[:, :30], max_columns=40).tolist() == list(range(30))
