"""Figure builders, URL state and the transition fallback: pure functions, no browser, no server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from frontend import figures as F
from frontend import figures_measures as M
from frontend.data import order_options, transition
from frontend.urlstate import DEFAULTS, parse_state, to_query

STEPS = [0, 25, 50, 100, 200, 400, 500, 600, 800, 1000]


def _heads(steps: list[int] = STEPS, n_layers: int = 2, n_heads: int = 4) -> pd.DataFrame:
    rows = [
        (s, layer, head, 0.05 + 0.7 * (s > 450) * (layer == 1))
        for s in steps
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    return pd.DataFrame(rows, columns=["checkpoint", "layer", "head", "value"])


def _loss(steps: list[int] = STEPS) -> pd.DataFrame:
    values = [4.1 if s < 450 else 0.7 for s in steps]
    return pd.concat(
        [
            pd.DataFrame({"checkpoint": steps, "quantity": "loss", "value": values}),
            pd.DataFrame({"checkpoint": steps, "quantity": "loss_se", "value": 0.05}),
        ]
    )


def test_overview_has_loss_above_heatmap_and_marks_the_transition() -> None:
    transition = {"step": 450, "lo": 400, "hi": 500, "label": "transition ≈ step 450"}
    fig = F.overview_figure(_heads(), _loss(), "heads.induction_score", transition=transition, cursor=1000)
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 1
    z = np.asarray(heatmaps[0].z)
    assert z.shape == (8, len(STEPS))  # layer·head rows × checkpoints
    assert list(heatmaps[0].y)[:2] == ["L0H0", "L0H1"]
    assert any(t.name == "loss" for t in fig.data)
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    # The transition on both panels (red dashes) and the cursor on both.
    assert sum(s.line.color == "#d62728" for s in lines) == 2
    assert fig.layout.xaxis2.type == "log"
    assert "0" in fig.layout.xaxis2.ticktext  # step 0 is drawn and labelled on a log axis
    assert any("transition" in (a.text or "") for a in fig.layout.annotations)


def test_overview_without_loss_or_order_still_draws() -> None:
    fig = F.overview_figure(_heads().iloc[0:0], None, "", xscale="linear")
    assert any("loss not measured" in (a.text or "") for a in fig.layout.annotations)


def test_colours_are_per_head_and_stable() -> None:
    assert F.head_color(1, 2, 2, 4) == F.head_color(1, 2, 2, 4)
    colours = {F.head_color(layer, head, 2, 4) for layer in range(2) for head in range(4)}
    assert len(colours) == 8
    fig = F.curves_figure(_heads(), title="t", ytitle="y", shape=(2, 4))
    by_name = {t.name: t.line.color for t in fig.data}
    assert by_name["L1H2"] == F.head_color(1, 2, 2, 4)


def test_many_points_switch_to_webgl() -> None:
    frame = _heads(list(range(0, 154 * 10, 10)), n_layers=24, n_heads=16)
    fig = F.curves_figure(frame, title="t", ytitle="y", shape=(24, 16))
    assert isinstance(fig.data[0], go.Scattergl)


def test_step_axis_and_log_ticks() -> None:
    assert F.step_axis([0, 25, 50], "log").tolist() == [12.5, 25, 50]
    assert F.step_axis([0, 25], "linear").tolist() == [0, 25]
    vals, texts = F.log_ticks([25, 1000])
    assert texts == ["50", "100", "200", "500", "1000"] and vals[0] == 50


def test_thermo_marks_beta_one_and_censored_beta_star() -> None:
    betas = np.geomspace(0.05, 20, 61)
    rows = []
    for head in range(2):
        for q in ("entropy", "heat_capacity", "internal_energy", "beta_f"):
            for b in betas:
                rows.append(
                    (0, head, b, q, float(np.exp(-(np.log(b / 0.6) ** 2))) if q == "heat_capacity" else 1.0)
                )
    sweep = pd.DataFrame(rows, columns=["layer", "head", "beta", "quantity", "value"])
    stars = pd.DataFrame(
        [
            (0, 0, "beta_star", 0.6),
            (0, 0, "beta_star_censored", 0.0),
            (0, 0, "beta_star_bound", np.nan),
            (0, 1, "beta_star", np.nan),
            (0, 1, "beta_star_censored", 1.0),
            (0, 1, "beta_star_bound", 20.0),
        ],
        columns=["layer", "head", "quantity", "value"],
    )
    fig = M.thermo_figure(sweep, stars, (1, 2), checkpoint=500, beta=0.5)
    hovers = " ".join(t.hovertemplate or "" for t in fig.data)
    assert "β* = 0.6" in hovers
    assert "β* ≥ 20 (censored" in hovers  # a censored peak is never shown as a number
    xs = [s.x0 for s in fig.layout.shapes if s.type == "line"]
    assert xs.count(1.0) == 4 and xs.count(0.5) == 4  # β = 1 and the β cursor on all four panels
    over = stars.assign(checkpoint=500)
    fig2 = M.beta_star_figure(pd.concat([over, over.assign(checkpoint=1000)]), (1, 2))
    assert any("censored" in (t.hovertemplate or "") for t in fig2.data)


def test_esd_has_marchenko_pastur_curve_and_alpha_error_bars() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(400, 100))
    eigs = np.linalg.eigvalsh(w.T @ w / 400)
    q = 100 / 400
    scalars = {
        "mp_lambda_minus": (1 - q**0.5) ** 2,
        "mp_lambda_plus": (1 + q**0.5) ** 2,
        "esd_alpha": 3.0,
        "esd_alpha_se": 0.4,
    }
    fig = M.esd_figure(eigs, scalars, "ESD of W")
    mp = next(t for t in fig.data if t.name == "Marchenko–Pastur")
    area = np.trapezoid(mp.y, mp.x)
    assert 0.9 < area <= 1.01  # the MP density of the matrix's own aspect ratio integrates to one
    assert "α = 3.00 ± 0.40" in fig.layout.title.text
    alpha = pd.DataFrame(
        {
            "matrix": "W_Q",
            "layer": 0,
            "checkpoint": [25, 25, 50, 50],
            "quantity": ["esd_alpha", "esd_alpha_se"] * 2,
            "value": [3, 0.4, 2.5, 0.3],
        }
    )
    err = M.alpha_figure(alpha).data[0].error_y
    assert list(err.array) == pytest.approx([0.4, 0.3])


def test_pattern_has_tokens_on_both_axes() -> None:
    tokens = ["The", " cat", " sat", " The", " cat"]
    z = np.tril(np.ones((5, 5)))
    z /= z.sum(1, keepdims=True)
    fig = F.pattern_figure(z.tolist(), tokens, "L1H0")
    assert fig.layout.xaxis.ticktext[1] == "1: cat" and fig.layout.yaxis.ticktext[3] == "3: The"
    assert fig.layout.yaxis.autorange == "reversed"


def test_compare_overlays_two_series() -> None:
    a = pd.DataFrame({"checkpoint": STEPS, "value": 1.0})
    fig = F.compare_figure({"A": a, "B": a.assign(value=2.0)}, "loss (nats)")
    assert [t.name for t in fig.data] == ["A", "B"]


def test_url_state_round_trip_and_bad_values() -> None:
    state = parse_state("?tab=thermo&layer=1&head=all&checkpoint=475&beta=0.63&xscale=linear&prompt=2")
    assert state["tab"] == "thermo" and state["layer"] == 1 and state["beta"] == 0.63
    assert parse_state("?" + to_query(state)) == state
    bad = parse_state({"tab": "nope", "layer": "x", "beta": "-1", "checkpoint": "-5", "xscale": "sideways"})
    assert bad == DEFAULTS


def test_the_marked_transition_is_the_findings_one() -> None:
    # Two findings as the API's status carries them; the dashboard marks findings.marked, not its own pick.
    base = {"kind": "step", "method": "step fit in ln t", "uncertainty_method": "residual bootstrap (n=50)"}
    score = {**base, "quantity": "induction_score", "layer": 1, "head": 2, "step": 310.4, "uncertainty": 20.0}
    loss = {**base, "quantity": "loss", "layer": None, "head": None, "step": 476.6, "uncertainty": None}
    loss.update(step_lo=400, step_hi=500)
    findings = {"transitions": [score, loss], "summary": "two", "marked": 1}
    marked = transition("a" * 24, {"findings": findings})
    assert marked is not None and marked["step"] == 477 and (marked["lo"], marked["hi"]) == (400, 500)
    assert "step 477 in loss" in marked["label"]
    other = transition("a" * 24, {"findings": {**findings, "marked": 0}})
    assert other is not None and other["step"] == 310 and (other["lo"], other["hi"]) == (290.4, 330.4)
    assert "layer 1, head 2" in other["label"]
    assert transition("a" * 24, {"findings": {**findings, "marked": None}})["step"] is None  # type: ignore[index]
    assert transition("a" * 24, {"findings": None}) is None  # not finished: nothing to mark yet


def test_order_options_follow_the_measures() -> None:
    assert order_options(["loss"]) == []
    assert order_options(["heads", "thermo"])[0] == "heads.induction_score"


def test_the_dashboard_never_imports_torch() -> None:
    code = "import sys; from frontend.server import create_combined_app; create_combined_app(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
