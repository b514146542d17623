"""Every interval is drawn: figures built from tidy frames with se / ci_lo / ci_hi carry bands and error
bars with the right numbers, the overview's χ view marks what the findings say, and frames without the
columns (results stored before them) still build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frontend import figures as F
from frontend import figures_measures as M
from frontend.data import transition
from frontend.figures_chi import order_chi_figure
from frontend.findings_view import findings_rows
from frontend.plotting import row_intervals

STEPS = [0, 25, 50, 100, 200, 400, 500, 600, 800, 1000]


def _score(se: float | None = 0.02, ci: bool = False, heads: int = 2) -> pd.DataFrame:
    rows = []
    for s in STEPS:
        for h in range(heads):
            value = 0.05 + 0.7 * (s > 450) + 0.01 * h
            rows.append(
                {
                    "checkpoint": s,
                    "layer": 1,
                    "head": h,
                    "quantity": "induction_score",
                    "value": value,
                    "se": se if se is not None else np.nan,
                    "ci_lo": value - 0.1 if ci else np.nan,
                    "ci_hi": value + 0.3 if ci else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _bands(fig) -> list:
    return [t for t in fig.data if getattr(t, "fill", None) == "toself"]


def test_row_intervals_prefer_the_95_interval_then_se() -> None:
    frame = pd.DataFrame(
        {
            "value": [1.0, 2.0, 3.0],
            "se": [0.1, 0.2, np.nan],
            "ci_lo": [0.5, np.nan, np.nan],
            "ci_hi": [1.7, 9, 9],
        }
    )
    lo, hi, is_ci = row_intervals(frame)
    assert lo[:2].tolist() == pytest.approx([0.5, 1.8]) and hi[:2].tolist() == pytest.approx([1.7, 2.2])
    assert is_ci.tolist() == [True, False, False] and np.isnan(lo[2]) and np.isnan(hi[2])
    assert row_intervals(frame.drop(columns=["se", "ci_lo", "ci_hi"])) is None  # an old result
    assert row_intervals(frame.assign(se=np.nan, ci_lo=np.nan)) is None  # columns, but no interval


def test_curves_draw_a_band_of_value_plus_minus_se_per_line() -> None:
    fig = F.curves_figure(_score(), title="t", ytitle="y", shape=(2, 2), xscale="linear")
    bands = _bands(fig)
    assert len(bands) == 2  # one per head, in its colour
    line = next(t for t in fig.data if t.name == "L1H0")
    y = np.asarray(line.y, dtype=float)
    band = next(b for b in bands if b.legendgroup == "L1H0")
    assert np.asarray(band.y, dtype=float) == pytest.approx(np.r_[y + 0.02, (y - 0.02)[::-1]])
    assert np.asarray(band.x, dtype=float) == pytest.approx(np.r_[STEPS, STEPS[::-1]])
    assert "0.02 (se)" in line.text[0] and "%{text}" in line.hovertemplate
    assert band.fillcolor.startswith("rgba(") and band.fillcolor.endswith(",0.18)")


def test_curves_band_is_the_95_interval_where_rows_have_one() -> None:
    fig = F.curves_figure(_score(ci=True, heads=1), title="t", ytitle="y", xscale="linear")
    (band,) = _bands(fig)
    y = np.asarray(next(t for t in fig.data if t.name == "L1H0").y, dtype=float)
    assert np.asarray(band.y, dtype=float) == pytest.approx(np.r_[y + 0.3, (y - 0.1)[::-1]])
    assert "(95%)" in next(t for t in fig.data if t.name == "L1H0").text[0]


def test_frames_without_intervals_still_build() -> None:
    old = _score().drop(columns=["se", "ci_lo", "ci_hi"])
    fig = F.curves_figure(old, title="t", ytitle="y")
    assert not _bands(fig) and all(t.text is None for t in fig.data)
    assert not _bands(F.curves_figure(_score(se=None), title="t", ytitle="y"))  # NaN columns
    chi = order_chi_figure(old, None, "heads.induction_score")
    assert any("no susceptibility χ is computed" in (a.text or "") for a in chi.layout.annotations)
    empty = order_chi_figure(old, old.iloc[0:0], "heads.induction_score")  # an analysis from before χ
    assert any("ran before χ existed" in (a.text or "") for a in empty.layout.annotations)
    assert not any(t.yaxis == "y2" for t in empty.data)


def test_overview_loss_band_from_se_column_and_no_chi_or_prompt_curves() -> None:
    values = [4.1 if s < 450 else 0.7 for s in STEPS]
    loss = pd.concat(
        [
            pd.DataFrame({"checkpoint": STEPS, "quantity": "loss", "value": values, "se": 0.05}),
            pd.DataFrame({"checkpoint": STEPS, "quantity": "loss_chi", "value": 3.0, "se": 0.4}),
            pd.DataFrame({"checkpoint": STEPS * 2, "quantity": "loss_prompt", "value": 4.0}),
            pd.DataFrame({"checkpoint": STEPS, "quantity": "loss_se", "value": 0.05}),
        ]
    )
    heads = _score()
    fig = F.overview_figure(heads, loss, "heads.induction_score", xscale="linear")
    names = {t.name for t in fig.data if t.type == "scatter" and t.fill != "toself"}
    assert names == {"loss"}  # χ, per-prompt values and the old loss_se rows are not curves
    (band,) = _bands(fig)
    assert np.asarray(band.y, dtype=float) == pytest.approx(
        np.r_[np.asarray(values) + 0.05, (np.asarray(values) - 0.05)[::-1]]
    )
    heatmap = next(t for t in fig.data if t.type == "heatmap")
    custom = np.asarray(heatmap.customdata, dtype=float)
    assert custom.shape == (2, len(STEPS), 2) and custom[..., 1] == pytest.approx(0.02)  # se in the hover
    assert "(se)" in heatmap.hovertemplate
    # An older result: the band comes from the loss_se rows.
    old = loss[loss["quantity"].isin(["loss", "loss_se"])].drop(columns=["se"])
    (band,) = _bands(F.overview_figure(heads, old, "heads.induction_score", xscale="linear"))
    assert max(np.asarray(band.y, dtype=float)) == pytest.approx(4.15)


def test_order_chi_figure_marks_window_peak_and_chi_band() -> None:
    order = _score(heads=1)
    chi = order.assign(quantity="induction_score_chi", value=[1 + 5 * (s == 500) for s in STEPS], se=0.3)
    findings = {
        "transitions": [
            {
                "quantity": "induction_score",
                "layer": 1,
                "head": 0,
                "step": 470,
                "window_lo": 400,
                "window_hi": 600,
            },
            {
                "quantity": "induction_score",
                "layer": 0,
                "head": 3,
                "step": 90,
                "window_lo": 50,
                "window_hi": 120,
            },
        ],
        "susceptibility": [
            {
                "quantity": "induction_score",
                "layer": 1,
                "head": 0,
                "peak_step": 500,
                "peak_ci_lo": 450,
                "peak_ci_hi": 560,
                "peak_value": 6.0,
                "peak_se": 0.3,
                "baseline": 1.0,
                "significant": True,
                "in_window": True,
                "transition_step": 470,
            }
        ],
    }
    fig = order_chi_figure(
        order, chi, "heads.induction_score", findings=findings, xscale="linear", cursor=1000
    )
    chi_line = next(t for t in fig.data if t.yaxis == "y2" and t.name == "L1H0")
    assert list(chi_line.y) == [1 + 5 * (s == 500) for s in STEPS]
    chi_band = next(t for t in _bands(fig) if t.yaxis == "y2")
    assert np.asarray(chi_band.y, dtype=float)[: len(STEPS)] == pytest.approx(np.asarray(chi_line.y) + 0.3)
    assert next(t for t in _bands(fig) if t.yaxis == "y").yaxis == "y"  # m(t) has its band on top
    peak = next(t for t in fig.data if (t.name or "").startswith("χ peak"))
    assert list(peak.x) == [500] and list(peak.y) == [6.0] and peak.marker.symbol == "star"
    assert list(peak.error_x.arrayminus) == [50] and list(peak.error_x.array) == [60]
    assert "[450, 560]" in peak.hovertemplate and "inside the transition window" in peak.hovertemplate
    windows = [s for s in fig.layout.shapes if s.type == "rect"]
    # Only the plotted head's transition window, on both rows (the other head is not shown).
    assert sorted((s.x0, s.x1, s.yref) for s in windows) == [(400, 600, "y domain"), (400, 600, "y2 domain")]
    assert fig.layout.xaxis2.title.text == "training step"


def test_beta_star_and_alpha_error_bars_come_from_the_interval() -> None:
    stars = pd.DataFrame(
        {
            "checkpoint": [25, 25, 50, 50],
            "layer": 0,
            "head": 0,
            "quantity": ["beta_star", "beta_star_censored"] * 2,
            "value": [0.8, 0.0, 1.2, 0.0],
            "se": [0.05, np.nan, 0.1, np.nan],
            "ci_lo": [0.7, np.nan, np.nan, np.nan],
            "ci_hi": [0.95, np.nan, np.nan, np.nan],
        }
    )
    line = M.beta_star_figure(stars, (1, 1), xscale="linear").data[0]
    assert list(line.error_y.arrayminus) == pytest.approx([0.1, 0.1]) and line.error_y.symmetric is False
    assert list(line.error_y.array) == pytest.approx([0.15, 0.1])
    assert "(95%)" in line.text[0] and "(se)" in line.text[1]
    alpha = pd.DataFrame(
        {
            "matrix": "W_Q",
            "layer": 0,
            "checkpoint": [25, 25, 50, 50],
            "quantity": ["esd_alpha", "esd_alpha_se"] * 2,
            "value": [3, 0.4, 2.5, 0.3],
            "ci_lo": [2.5, np.nan, np.nan, np.nan],
            "ci_hi": [3.9, np.nan, np.nan, np.nan],
        }
    )
    err = M.alpha_figure(alpha).data[0].error_y
    # The bootstrap interval where there is one, else ± the asymptotic standard error.
    assert list(err.arrayminus) == pytest.approx([0.5, 0.3]) and list(err.array) == pytest.approx([0.9, 0.3])


def test_compare_draws_each_series_band() -> None:
    a = pd.DataFrame({"checkpoint": STEPS, "value": 1.0, "se": 0.1})
    fig = F.compare_figure({"A": a, "B": a.assign(value=2.0).drop(columns=["se"])}, "loss (nats)")
    (band,) = _bands(fig)
    assert band.legendgroup == "A" and max(band.y) == pytest.approx(1.1) and min(band.y) == pytest.approx(0.9)


def test_findings_rows_give_every_number_with_its_interval() -> None:
    findings = {
        "transitions": [
            {
                "quantity": "loss",
                "layer": None,
                "head": None,
                "kind": "step",
                "step": 486.2,
                "step_ci_lo": 471.0,
                "step_ci_hi": 502.9,
                "window_lo": 420,
                "window_hi": 560,
                "before": 4.1,
                "after": 0.7,
                "uncertainty_method": "prompt bootstrap (n=100)",
            }
        ],
        "susceptibility": [
            {
                "quantity": "induction_score",
                "layer": 1,
                "head": 0,
                "peak_step": 495.5,
                "peak_ci_lo": 472.0,
                "peak_ci_hi": 973.9,
                "peak_value": 0.058,
                "peak_se": 0.011,
                "baseline": 0.04,
                "significant": False,
                "in_window": True,
                "transition_step": 478.4,
            }
        ],
        "exponents": [
            {
                "quantity": "loss",
                "layer": None,
                "head": None,
                "side": "before",
                "b": 0.52,
                "b_ci_lo": 0.44,
                "b_ci_hi": 0.57,
                "n_points": 5,
                "supported": True,
                "reason": "",
            },
            {
                "quantity": "loss",
                "layer": None,
                "head": None,
                "side": "after",
                "b": 0.8,
                "n_points": 3,
                "supported": False,
                "reason": "3 checkpoints in the window on this side; need 4",
            },
        ],
    }
    t, p, before, after = findings_rows(findings)
    assert (t["value"], t["95% interval"]) == ("step 486", "[471, 503]")
    assert (p["series"], p["value"], p["95% interval"]) == ("induction_score L1H0", "step 496", "[472, 974]")
    assert "not significant" in p["notes"] and "inside the window of the transition at step 478" in p["notes"]
    assert (before["value"], before["95% interval"]) == ("b = 0.52", "[0.44, 0.57]")
    assert (
        after["value"] == "not supported"
        and after["notes"] == "3 checkpoints in the window on this side; need 4"
    )
    assert findings_rows(None) == [] and findings_rows({"transitions": []}) == []


def test_the_marked_transition_band_is_its_95_interval() -> None:
    t = {"quantity": "loss", "layer": None, "head": None, "step": 486.2, "step_lo": 475, "step_hi": 500}
    t.update(uncertainty=8.0, uncertainty_method="prompt bootstrap (n=100)", method="step fit in ln t")
    marked = transition(
        "a" * 24,
        {
            "findings": {
                "transitions": [{**t, "step_ci_lo": 471.0, "step_ci_hi": 502.9}],
                "summary": "s",
                "marked": 0,
            }
        },
    )
    assert marked is not None and (marked["lo"], marked["hi"]) == (471.0, 502.9)
    assert "step 486 [471, 503]" in marked["label"]
    plain = transition("a" * 24, {"findings": {"transitions": [t], "summary": "s", "marked": 0}})
    assert plain is not None and (plain["lo"], plain["hi"]) == pytest.approx((478.2, 494.2))


def test_the_dashboards_slices_leave_per_prompt_rows_out(tmp_path, monkeypatch) -> None:
    """The dashboard's client asks the real API (in process, over a real store) with prompts=false:
    a measure's slice has its uncertainty columns and no per-prompt rows unless a view names them."""
    from frontend import client
    from frontend.server import create_combined_app
    from phasescope.config import Settings
    from phasescope.measures.tables import concat_tables, tidy
    from phasescope.schemas import AnalysisRequest
    from phasescope.service.queue import finalize
    from phasescope.service.store import ResultStore

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens: finished results need none
    settings = Settings(data_dir=tmp_path)
    store = ResultStore(tmp_path / "results")
    aid = "0000000000000000000000d1"
    store.save_request(aid, AnalysisRequest(model="tl:pythia-160m", measures=["heads"]), {"steps": [0, 10]})
    for step in (0, 10):
        score = tidy("heads", "induction_score", np.full((1, 2), 0.5), ("layer", "head"), checkpoint=step)
        prompts = tidy(
            "heads", "induction_score_prompt", np.ones((1, 2, 3)), ("layer", "head", "index"), checkpoint=step
        )
        store.write_part(aid, step, concat_tables([score.assign(se=0.01), prompts]))
    assert finalize(store, aid, None)
    create_combined_app(settings)  # points frontend.client at this app, in process
    heads = client.slice_table(aid, "heads")
    assert set(heads["quantity"]) == {"induction_score"} and len(heads) == 4
    assert heads["se"].to_numpy() == pytest.approx(0.01) and {"ci_lo", "ci_hi"} <= set(heads.columns)
    named = client.slice_table(aid, "heads", "induction_score_prompt")
    assert len(named) == 12 and set(named["quantity"]) == {"induction_score_prompt"}
    assert len(client.slice_table(aid, "heads", prompts=True)) == 16
