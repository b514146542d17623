"""A checkpoint-slider step in a real headless Chromium: the cursor of a line over training steps moves
in the browser (no redraw, no server call), and only the per-checkpoint figures come from the server."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.keys import Keys

from tests.e2e.browser import Chromium

pytestmark = pytest.mark.slow

# The graphs' live state, read from Plotly's own objects (gd.layout / gd.data) in the page.
_READ = """
const gd = name => document.querySelector('[id*=\\'"name":"' + name + '"\\'] .js-plotly-plot');
const line = gd(arguments[0]), profile = gd(arguments[1]);
const cursor = (line.layout.shapes || []).filter(s => s.name === 'cursor').map(s => [s.x0, s.x1]);
const calls = performance.getEntriesByType('resource')
    .filter(e => e.name.includes('_dash-update-component')).length;
return {cursor: cursor, n_cursors: cursor.length, line_probe: line.data[0].probe === 1, profile_probe: profile.data[0].probe === 1,
        profile_title: profile.layout.title.text, calls: calls};
"""
# Tags the first trace of each graph (a full redraw replaces the trace objects and drops the tag) and
# forgets the requests so far.
_PROBE = """
for (const gd of document.querySelectorAll('#tab-content .js-plotly-plot')) { gd.data[0].probe = 1; }
performance.clearResourceTimings();
"""


def _step_home(c: Chromium, tab: str, line: str, profile: str, first: int, titled: bool) -> dict[str, Any]:
    c.driver.execute_script(_PROBE)
    c.find("#v-checkpoint [role='slider']").send_keys(Keys.HOME)  # the first checkpoint
    c.wait_text("#checkpoint-label", f"step {first}")
    c.wait(
        lambda d: (
            (r := d.execute_script(_READ, line, profile))["cursor"]
            and all(x0 == x1 == first for x0, x1 in r["cursor"])
            and (not titled or f"step {first}" in (r["profile_title"] or ""))
        ),
        f"the {tab} cursor and figures at step {first}",
    )
    c.wait_idle()
    return c.driver.execute_script(_READ, line, profile)


def test_a_slider_step_moves_cursors_in_the_browser_and_redraws_per_checkpoint_figures(
    demo: dict[str, Any], chromium: Chromium
) -> None:
    steps = demo["checkpoints"]
    first, last = steps[0], steps[-1]
    base = f"{demo['url']}/analyses/{demo['id']}"
    # Entropy: the entropy-per-head lines keep their traces (only the cursor shape moved); the profile
    # at one checkpoint is redrawn, by one server call.
    chromium.get(f"{base}?tab=entropy&xscale=linear&checkpoint={last}")
    chromium.find("#content-entropy")
    chromium.wait_idle()
    before = chromium.driver.execute_script(_READ, "entropy-entropy_mean", "entropy-profile")
    assert before["cursor"] == [[last, last]] and f"step {last}" in before["profile_title"], before
    after = _step_home(chromium, "entropy", "entropy-entropy_mean", "entropy-profile", first, titled=True)
    assert after["line_probe"] and not after["profile_probe"], after
    assert after["calls"] == 1, after  # the per-checkpoint figures, nothing else
    csv = chromium.find("[id*='\"name\":\"entropy-profile\"'][id*='fig-csv']").get_attribute("href")
    assert f"checkpoint={first}" in csv, csv
    assert f"checkpoint={first}" in chromium.driver.current_url  # the URL state follows
    # Overview: nothing there depends on the checkpoint, so a step asks the server nothing.
    chromium.get(f"{base}?tab=overview&xscale=linear&checkpoint={last}")
    chromium.find("#content-overview")
    chromium.wait_idle()
    after = _step_home(chromium, "overview", "overview", "overview", first, titled=False)
    assert after["line_probe"] and after["profile_probe"] and after["calls"] == 0, after
    assert chromium.severe_logs() == []
