"""In a real Chromium: the dashboard renders under its Content-Security-Policy with no violation, and
its "new analysis" form writes only with the token the user typed (kept in the tab's session).

Screenshots go to pytest's tmp directory, never to docs/img.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.keys import Keys

from tests.e2e.browser import Chromium
from tests.integration.service import ApiServer

pytestmark = pytest.mark.slow

TOKEN = "e2e-users-token"
TABS = ("overview", "entropy", "thermo", "spectra", "patterns")
# Records every CSP violation of the page, from before its first script runs (DevTools injects it).
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e =>
    window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def _watch_csp(c: Chromium) -> None:
    c.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CSP})


def _violations(c: Chromium) -> list[str]:
    return list(c.driver.execute_script("return window.__csp || []"))


@pytest.fixture(scope="module")
def guarded(stack: dict[str, Any]) -> Iterator[str]:
    """A second API + dashboard over the same data and Redis, with PHASESCOPE_API_TOKEN set."""
    server = ApiServer({**stack["api"].env, "PHASESCOPE_API_TOKEN": TOKEN}, stack["logs"] / "guarded").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def small(stack: dict[str, Any]) -> str:
    """A 3-checkpoint analysis with the default measures, finished: every tab has figures to draw."""
    from phasescope.service.client import Client

    with Client(stack["url"]) as api:
        aid = api.submit(stack["model"], checkpoints={"count": 3, "spacing": "linear"})["id"]
        state = api.wait(aid, timeout=600, poll=0.5, progress=False)
    assert state["status"] == "finished", state
    return aid


def test_pages_render_under_the_content_security_policy(
    stack: dict[str, Any], small: str, chromium: Chromium, tmp_path: Path
) -> None:
    url = stack["url"]
    policy = httpx.get(f"{url}/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    _watch_csp(chromium)
    before = _total(url)
    for path, ready in (("/", "#home-analyses"), (f"/new?model={stack['model']}", "#new-range-label")):
        chromium.get(url + path)
        chromium.find(ready)
        chromium.wait_idle()
        assert _violations(chromium) == [], path
    # Opening the form submits nothing (only a click does), and it stays on the form.
    chromium.wait_text("#new-range-label", "checkpoints")
    assert "/new" in chromium.driver.current_url and _total(url) == before
    chromium.get(f"{url}/analyses/{small}")
    chromium.find("#content-overview")
    chromium.wait_idle()
    for tab in TABS:
        chromium.find(f"#tab-{tab}").click()
        chromium.find(f"#content-{tab}")
        chromium.wait_idle()
        assert chromium.all(f"#content-{tab} .dash-graph .main-svg"), f"{tab} drew no figure"
        assert _violations(chromium) == [], tab
    chromium.screenshot_full(str(tmp_path / "patterns.png"))
    logs = chromium.severe_logs()
    assert logs == [] and not any("Content Security Policy" in m for m in logs), logs


def _fill_small_request(c: Chromium, seed: int) -> None:
    """Only the loss, on two log-spaced checkpoints, with a seed no other test uses (a new analysis)."""
    c.wait_text("#new-range-label", "checkpoints")
    for box in c.all("#new-measures input[type='checkbox']"):
        if box.is_selected():
            box.click()
    c.find("#new-measures input[value='loss']").click()
    c.find("#new-spacing input[value='log']").click()
    for field, value in (("#new-count", "2"), ("#new-seed", str(seed))):
        box = c.find(field)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value)
    c.wait_text("#new-range-label", "2 checkpoints")


def _total(url: str) -> int:
    return int(httpx.get(f"{url}/api/v1/analyses", params={"limit": 1}, timeout=60).json()["total"])


def test_new_analysis_is_written_with_the_users_token_only(
    stack: dict[str, Any], guarded: str, chromium: Chromium, tmp_path: Path
) -> None:
    before = _total(guarded)
    chromium.get(f"{guarded}/new?model={stack['model']}")
    _fill_small_request(chromium, seed=4242)
    chromium.wait_idle()
    assert not chromium.all("#new-auth-error"), "the form submitted before it was clicked"
    chromium.find("#new-submit").click()
    message = chromium.wait_text("#new-auth-error", "needs an API token")
    assert "'API token'" in message and "Nothing was submitted" in message
    token = chromium.find("#new-token")
    token.send_keys("not-the-token")
    chromium.find("#new-submit").click()
    chromium.wait_text("#new-auth-error", "did not accept this token")
    assert _total(guarded) == before, "an analysis was created without the user's token"
    chromium.screenshot_full(str(tmp_path / "new-without-token.png"))

    token.send_keys(Keys.CONTROL, "a")
    token.send_keys(TOKEN)
    chromium.find("#new-submit").click()
    # The page follows the analysis it created, and opens it when it is finished (a small one may
    # finish before the first poll: then the status card is gone before it can be seen).
    chromium.wait(lambda d: "/analyses/" in d.current_url, "the finished analysis to open", timeout=300)
    chromium.find("#content-overview")
    assert "finished" in chromium.find("#analysis-status").text
    assert _total(guarded) == before + 1
    # The token stays in this tab's session (not on the server), and fills the form again.
    assert json.loads(chromium.driver.execute_script("return sessionStorage.getItem('auth-token')")) == TOKEN
    chromium.get(f"{guarded}/new?model={stack['model']}")
    chromium.wait(
        lambda d: d.find_element("id", "new-token").get_attribute("value") == TOKEN, "the token back"
    )
    assert chromium.severe_logs() == []
