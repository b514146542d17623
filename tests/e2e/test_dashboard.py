"""The dashboard in a real headless Chromium against the real stack (Redis, workers, API + dashboard)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.browser import Chromium

pytestmark = pytest.mark.slow

# The screenshots in docs/img are refreshed only on request (`make screenshots`); an ordinary test
# run writes them to a temporary folder, so `make test` leaves the working tree as it found it.
_DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
IMG = (
    _DOCS_IMG
    if os.environ.get("PHASESCOPE_REFRESH_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="phasescope-screenshots-"))
)
TABS = ("overview", "entropy", "thermo", "spectra", "landscape", "patterns")


def _choose(c: Chromium, dropdown: str, label: str) -> None:
    """Pick ``label`` in a dcc.Dropdown: open it, click the option."""
    c.dropdown_option(dropdown, label).click()
    c.wait_text(f"#{dropdown}", label)


def _open_view(c: Chromium, url: str, tab: str) -> float:
    t0 = time.perf_counter()
    c.get(url)
    c.find(f"#content-{tab}")
    c.wait_idle()
    return time.perf_counter() - t0


def test_every_tab_renders_without_console_errors(demo: dict[str, Any], chromium: Chromium) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    cold = _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}", "overview")
    assert cold < 60, f"the first view after the server started took {cold:.1f} s"
    warm = _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}", "overview")
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    print(
        f"first paint of the overview: {cold:.2f} s cold server, {warm:.2f} s warm (load {load:.1f} per core)"
    )
    if load < 1:  # the target is 2 s; on an oversubscribed machine a wall-clock bound says nothing about us
        assert warm < 2.5, f"first paint of the overview took {warm:.1f} s"
    for tab in TABS:
        chromium.find(f"#tab-{tab}").click()
        chromium.find(f"#content-{tab}")
        chromium.wait_idle()
        assert chromium.severe_logs() == [], tab
        assert f"tab={tab}" in chromium.driver.current_url
        if tab == "landscape":
            assert "not measured in this analysis" in chromium.find("#landscape-empty").text
        else:
            n = len(chromium.all(f"#content-{tab} .dash-graph .main-svg"))
            assert n >= 1, f"{tab} drew no figure"
        chromium.screenshot_full(str(IMG / f"dashboard-{tab}.png"))
    assert chromium.severe_logs() == []


def test_overview_marks_the_transition(demo: dict[str, Any], chromium: Chromium) -> None:
    _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}?tab=overview", "overview")
    note = chromium.find("#transition-note").text
    match = re.search(r"step (\d+)", note)
    assert match, note
    step = int(match.group(1))
    assert demo["checkpoints"][0] <= step <= demo["checkpoints"][-1]
    if demo["model"].startswith("zoo:induction"):
        # docs/zoo.md: the repeated-half loss falls half-way at step 460–500 on 2 cores, five seeds.
        assert 300 <= step <= 700, note
    # The marker is drawn on the figure (a red dashed line) and the heatmap is there.
    assert chromium.all("#content-overview .heatmaplayer"), "no heatmap"


def test_the_marked_step_is_the_apis_finding(demo: dict[str, Any], chromium: Chromium) -> None:
    """The overview and the home page mark the transition the API's findings name (findings.marked)."""
    state = httpx.get(f"{demo['url']}/api/v1/analyses/{demo['id']}", timeout=60).json()
    findings = state["findings"]
    assert findings is not None and findings["marked"] is not None, findings
    marked = findings["transitions"][findings["marked"]]
    step = round(marked["step"])
    if demo["model"].startswith("zoo:induction"):
        assert marked["quantity"] == "loss" and 300 <= step <= 700, marked  # docs/zoo.md
    # A linear step axis: the marker's x is the step itself.
    _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}?tab=overview&xscale=linear", "overview")
    note = chromium.find("#transition-note").text
    assert f"step {step}" in note and marked["quantity"] in note, note
    shape = state["shape"]  # the header shows the model's shape as the status gives it
    assert f"{shape['n_layers']} layers × {shape['n_heads']} heads" in chromium.find("#analysis-status").text
    lines = chromium.driver.execute_script(
        """
        const plot = document.querySelector('#content-overview .js-plotly-plot');
        return (plot.layout.shapes || [])
            .filter(s => s.line && s.line.dash === 'dash' && s.line.color === '#d62728')
            .map(s => [s.x0, s.x1]);
        """
    )
    assert lines and all(x0 == x1 == step for x0, x1 in lines), (lines, step)
    if {"heads", "loss"} <= set(state["measures"]):
        # Issue 14: χ(t) under m(t) (two rows on one step axis, χ with its band), and the findings
        # table gives the marked step with its 95% interval as the API's findings say it.
        chi = chromium.driver.execute_script(
            """
            const card = document.getElementById('{"name":"order-chi","type":"fig"}');
            const plot = card && card.querySelector('.js-plotly-plot');
            if (!plot) { return null; }
            return {rows: plot.data.filter(t => t.yaxis === 'y2').length,
                    bands: plot.data.filter(t => t.yaxis === 'y2' && t.fill === 'toself').length,
                    title: plot.layout.yaxis2 && plot.layout.yaxis2.title.text};
            """
        )
        assert chi and chi["rows"] > 0 and chi["bands"] > 0, chi
        table = chromium.find("#findings-table").text
        lo, hi = marked.get("step_ci_lo"), marked.get("step_ci_hi")
        if lo is not None and hi is not None:
            assert f"step {marked['step']:.0f} [{lo:.0f}, {hi:.0f}]" in note, note
            assert f"[{lo:.0f}, {hi:.0f}]" in table, table[:400]
        if findings.get("susceptibility"):
            assert "χ peak" in table, table[:400]
    chromium.get(demo["url"] + "/")
    row = chromium.wait_text("#home-analyses", demo["id"])
    assert f"≈ step {marked['step']:.0f} ({marked['quantity']})" in row, row
    assert chromium.severe_logs() == []


def test_share_link_restores_the_view_in_a_fresh_browser(demo: dict[str, Any], stack: dict[str, Any]) -> None:
    a = Chromium()
    try:
        _open_view(a, f"{demo['url']}/analyses/{demo['id']}", "overview")
        a.find("#tab-thermo").click()
        a.find("#content-thermo")
        _choose(a, "v-layer", "layer 1")
        beta = a.find("#v-beta")
        beta.clear()
        beta.send_keys("0.5", Keys.ENTER)
        a.find("#v-xscale input[value='linear']").click()
        slider = a.find("#v-checkpoint [role='slider']")
        slider.send_keys(Keys.HOME)  # the first checkpoint
        first = demo["checkpoints"][0]
        a.wait_text("#checkpoint-label", f"step {first}")
        a.wait(
            lambda d: "xscale=linear" in d.current_url and "beta=0.5" in d.current_url, "the URL to follow"
        )
        a.wait_idle()
        link = a.find("#share-url").get_attribute("value")
        assert link == a.driver.current_url
    finally:
        a.close()
    query = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
    assert query["tab"] == "thermo" and query["layer"] == "1" and query["beta"] == "0.5"
    assert query["checkpoint"] == str(first) and query["xscale"] == "linear"

    # The link survives a server restart: results come from the store.
    stack["api"].stop()
    stack["api"].start()
    b = Chromium()
    try:
        b.get(link)
        b.find("#content-thermo")
        b.wait_idle()
        assert "tab--selected" in b.find("#tab-thermo").get_attribute("class")
        assert "layer 1" in b.find("#v-layer").text
        assert float(b.find("#v-beta").get_attribute("value")) == 0.5
        assert b.find("#v-xscale input[value='linear']").is_selected()
        assert b.find("#checkpoint-label").text == f"step {first}"
        assert f"step {first}" in b.find("#content-thermo").text  # the sweep is at that checkpoint
        assert b.driver.current_url == link
        assert b.severe_logs() == []
    finally:
        b.close()


def test_play_moves_the_checkpoint(demo: dict[str, Any], chromium: Chromium) -> None:
    last = demo["checkpoints"][-1]
    _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}?tab=entropy", "entropy")
    assert chromium.find("#checkpoint-label").text == f"step {last}"
    chromium.find("#play").click()  # from the last checkpoint, play wraps to the first
    chromium.wait_text("#checkpoint-label", f"step {demo['checkpoints'][0]}")
    chromium.find("#play").click()
    chromium.wait_text("#play", "play")


def test_submit_through_the_form_and_follow_it(demo: dict[str, Any], chromium: Chromium) -> None:
    chromium.get(f"{demo['url']}/new?model={demo['model']}")
    chromium.wait_text("#new-range-label", "checkpoints")
    # An error from the API is shown as the API words it: no measure chosen.
    for box in chromium.all("#new-measures input[type='checkbox']"):
        if box.is_selected():
            box.click()
    chromium.find("#new-submit").click()
    error = chromium.wait_text("#new-error", "measures")
    assert "at least 1" in error, error
    for name in ("heads", "loss"):
        chromium.find(f"#new-measures input[value='{name}']").click()
    chromium.find("#new-spacing input[value='log']").click()
    count = chromium.find("#new-count")
    count.send_keys(Keys.CONTROL, "a")
    count.send_keys("6")

    def picked(d: Any) -> int | None:
        found = re.search(r"^(\d+) checkpoints", d.find_element(By.ID, "new-range-label").text)
        return int(found.group(1)) if found and int(found.group(1)) <= 6 else None

    n = chromium.wait(picked, "the log-spaced selection of 6")
    assert 2 <= n <= 6  # log-spaced picks the nearest steps, so neighbours at small steps may coincide
    chromium.screenshot_full(str(IMG / "dashboard-new.png"))
    chromium.find("#new-submit").click()
    # The page follows the job and opens the result when it is done.
    chromium.wait(lambda d: "/analyses/" in d.current_url, "the finished analysis to open", timeout=180)
    chromium.find("#content-overview")
    chromium.wait_idle()
    assert "finished" in chromium.find("#analysis-status").text
    assert f"{n} checkpoints" in chromium.find("#analysis-status").text
    assert chromium.severe_logs() == []


def test_catalog_and_compare(demo: dict[str, Any], chromium: Chromium) -> None:
    chromium.get(demo["url"] + "/")
    chromium.wait_text("#home-analyses", demo["id"])
    assert "finished" in chromium.find("#home-analyses").text
    chromium.screenshot_full(str(IMG / "dashboard-home.png"))
    chromium.get(f"{demo['url']}/compare?a={demo['id']}&b={demo['id']}&quantity=loss.loss")
    chromium.find("#cmp-content .dash-graph")
    chromium.wait_idle()
    assert len(chromium.all("#cmp-content .legendtext")) == 2
    chromium.screenshot_full(str(IMG / "dashboard-compare.png"))
    assert chromium.severe_logs() == []


def test_patterns_endpoint_serves_tokens_and_rows(demo: dict[str, Any]) -> None:
    base = f"{demo['url']}/api/v1/analyses/{demo['id']}/patterns"
    index = httpx.get(base).json()
    assert index["checkpoints"] == demo["checkpoints"]
    one = httpx.get(base, params={"checkpoint": index["checkpoints"][-1], "layer": 1, "head": 0}).json()
    n = len(one["tokens"])
    assert len(one["pattern"]) == n and all(abs(sum(row) - 1) < 1e-2 for row in one["pattern"])
    assert all(v == 0 for row_i, row in enumerate(one["pattern"]) for v in row[row_i + 1 :])  # causal
    missing = httpx.get(base, params={"checkpoint": 123456789})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    bad = httpx.get(base, params={"checkpoint": index["checkpoints"][0], "layer": 99})
    assert bad.status_code == 422 and "layer" in bad.json()["detail"]
    # Unknown API paths are JSON 404s, not the dashboard's HTML.
    assert httpx.get(f"{demo['url']}/api/v1/nope").json()["error"] == "not_found"


def test_energy_landscape_tab_draws_every_measure(demo: dict[str, Any], chromium: Chromium) -> None:
    """An analysis with the landscape measures: surface, sharpness, LLC and energy histograms drawn."""
    from phasescope.service.client import Client

    steps = demo["checkpoints"]
    chosen = [steps[0], steps[len(steps) // 2], steps[-1]]
    params = {
        "landscape_points": 5,
        "sharpness_k": 1,
        "hutchinson_samples": 0,
        "llc_chains": 2,
        "llc_draws": 20,
        "heavy_prompts": 8,
    }
    with Client(demo["url"]) as api:
        aid = api.submit(
            demo["model"],
            checkpoints=chosen,
            measures=["landscape", "sharpness", "llc", "energies"],
            params=params,
        )["id"]
        state = api.wait(aid, timeout=600, poll=0.5, progress=False)
    assert state["status"] == "finished", state
    _open_view(chromium, f"{demo['url']}/analyses/{aid}?tab=landscape&checkpoint={chosen[-1]}", "landscape")
    assert not chromium.all("#landscape-empty")
    cards = chromium.all("#content-landscape .card")
    assert len(cards) == 4, [c.text[:80] for c in cards]  # surface, sharpness, LLC, energies
    for card in cards:
        assert card.find_elements(By.CSS_SELECTOR, ".dash-graph .main-svg"), card.text[:80]
        assert "no loss surface" not in card.text
    # The surface is a 5×5 contour; sharpness and LLC are curves over the three checkpoints.
    assert chromium.all("#content-landscape .contourlayer"), "no loss-surface contour"
    assert len(chromium.all("#content-landscape .scatterlayer .point")) >= 2 * len(chosen)
    assert chromium.severe_logs() == []
    chromium.screenshot_full(str(IMG / "dashboard-landscape.png"))


def test_dynamics_and_fields_tabs_draw_the_issue_15_measures(
    demo: dict[str, Any], chromium: Chromium
) -> None:
    """An analysis with the trajectory and activation-field measures: the Dynamics and Fields tabs appear
    (the demo analysis, which ran none of them, has neither), draw their figures, and a slider step
    redraws their per-checkpoint figures."""
    from phasescope.measures import default_measures, measure_names, measures
    from phasescope.schemas import MeasureParams
    from phasescope.service.client import Client

    on_tabs = [m.name for m in (*measures(tab="dynamics"), *measures(tab="fields"))]
    if not set(on_tabs) & set(default_measures()):  # a tab shows when the analysis ran one of its measures
        _open_view(chromium, f"{demo['url']}/analyses/{demo['id']}", "overview")
        assert not chromium.all("#tab-dynamics") and not chromium.all("#tab-fields")
    steps = demo["checkpoints"]
    chosen = sorted({steps[round(f * (len(steps) - 1))] for f in (0, 0.25, 0.5, 0.75, 1)})
    # head_llc runs one SGLD sampler per head (minutes per checkpoint on 2 cores): its heatmap is the
    # same builder as the kinetic energy's, tested in tests/unit/test_figures_dynamics.py.
    ran = [m for m in ("loss", "heads", *on_tabs) if m in measure_names() and m != "head_llc"]
    cheap = {"landscape_points": 5, "heavy_prompts": 2, "slq_steps": 8, "slq_probes": 2}
    params = {k: v for k, v in cheap.items() if k in MeasureParams.model_fields}
    with Client(demo["url"]) as api:
        aid = api.submit(demo["model"], checkpoints=chosen, measures=ran, params=params)["id"]
        state = api.wait(aid, timeout=600, poll=0.5, progress=False)
    assert state["status"] == "finished", state
    mid = chosen[len(chosen) // 2]
    for tab, wanted in (
        ("dynamics", {"trajectory": 6, "trajectory_pca": 2, "hessian_density": 2}),
        ("fields", {"residual": 4, "correlation": 5, "meanfield": 0}),
    ):
        _open_view(chromium, f"{demo['url']}/analyses/{aid}?tab={tab}&checkpoint={mid}", tab)
        assert "tab--selected" in chromium.find(f"#tab-{tab}").get_attribute("class")
        assert not chromium.all(f"#{tab}-empty")
        if tab == "dynamics" and "head_llc" in on_tabs:  # the one measure of the tab it did not run
            assert "(“head_llc”)" in chromium.find("#dynamics-missing").text
        cards = chromium.all(f"#content-{tab} .card")
        assert len(cards) >= sum(n for m, n in wanted.items() if m in ran), [c.text[:60] for c in cards]
        for card in cards:
            assert card.find_elements(By.CSS_SELECTOR, ".dash-graph .main-svg"), card.text[:80]
            assert "no data" not in card.text, card.text[:80]
        assert chromium.severe_logs() == [], tab
        chromium.screenshot_full(str(IMG / f"dashboard-{tab}.png"))
    # Dynamics: the phase diagrams are heatmaps, the PCA plane a contour with the path on it.
    chromium.find("#tab-dynamics").click()
    chromium.find("#content-dynamics")
    chromium.wait_idle()
    assert len(chromium.all("#content-dynamics .heatmaplayer")) >= 1
    if "trajectory_pca" in ran:
        assert chromium.all("#content-dynamics .contourlayer"), "no PCA-plane contour"
    # Fields: the demo series is attention-only, so the mean-field check says there is no MLP; a
    # slider step redraws the figures of one checkpoint (their titles name it).
    chromium.find("#tab-fields").click()
    chromium.find("#content-fields")
    chromium.wait_idle()
    if "meanfield" in ran and demo["model"].startswith("zoo:induction"):
        assert "no MLP blocks" in chromium.find("#fields-no-mlp").text
    assert f"Residual norm through depth at step {mid}" in chromium.find("#content-fields").text
    chromium.find("#v-checkpoint [role='slider']").send_keys(Keys.HOME)
    chromium.wait_text("#content-fields", f"Residual norm through depth at step {chosen[0]}")
    assert (
        f"checkpoint={chosen[0]}" in chromium.driver.current_url
        and "tab=fields" in chromium.driver.current_url
    )
    assert chromium.severe_logs() == []
