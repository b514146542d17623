"""A real headless Chromium (Debian's chromium + chromedriver) driven by Selenium through Dash's test Browser.

Every wait is on the page (an element, a text, a URL), never a sleep.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["Chromium", "chromium_available"]

CHROMIUM = os.environ.get("PHASESCOPE_CHROMIUM", "/usr/bin/chromium")


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM) and shutil.which("chromedriver") is not None


class Chromium:
    """One fresh browser profile (nothing shared with another Chromium: cookies, storage, cache)."""

    def __init__(self, width: int = 1440, height: int = 1000, timeout: float = 30) -> None:
        os.environ.setdefault("DASH_TEST_CHROMEPATH", CHROMIUM)
        from dash.testing.browser import Browser

        self.profile = tempfile.mkdtemp(prefix="phasescope-chromium-")
        options = Options()
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
        ):
            options.add_argument(flag)
        self.timeout = timeout
        self.browser = Browser(
            "chrome", headless=True, options=[options], percy_run=False, wait_timeout=int(timeout)
        )
        self.driver = self.browser.driver
        self.driver.implicitly_wait(0)  # explicit waits only

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def get(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, predicate: Callable[[Any], Any], what: str, timeout: float | None = None) -> Any:
        return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.1).until(
            predicate, message=what
        )

    def find(self, css: str, timeout: float | None = None) -> WebElement:
        return self.wait(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, css)), None), f"element {css}", timeout
        )

    def dropdown_option(self, dropdown: str, label: str) -> WebElement:
        """Open the dcc.Dropdown ``#dropdown`` and return its option labelled ``label`` (not clicked)."""
        self.find(f"#{dropdown}").click()
        return self.wait(
            lambda d: next(
                (
                    o
                    for o in d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options [role='option']")
                    if o.text.strip().lower() == label.lower()
                ),
                None,
            ),
            f"option {label!r} of {dropdown}",
        )

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_text(self, css: str, contains: str, timeout: float | None = None) -> str:
        def has() -> str | None:
            for el in self.driver.find_elements(By.CSS_SELECTOR, css):
                try:
                    if contains in el.text:
                        return el.text
                except Exception:  # re-rendered between find and read
                    return None
            return None

        return self.wait(lambda _: has(), f"{css} containing {contains!r}", timeout)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Until Dash has no callback in flight and every graph on the page has drawn."""
        script = """
            const loading = document.querySelectorAll('[data-dash-is-loading="true"]').length;
            const graphs = document.querySelectorAll('.dash-graph');
            const drawn = document.querySelectorAll('.dash-graph .js-plotly-plot .main-svg').length;
            return loading === 0 && drawn >= graphs.length;
        """
        self.wait(lambda d: d.execute_script(script), "callbacks to finish and graphs to draw", timeout)

    def severe_logs(self) -> list[str]:
        """Console errors since the last call (SEVERE only; Chromium's favicon 404 is not ours)."""
        return [
            e["message"]
            for e in self.driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
        ]

    def screenshot_full(self, path: str, width: int = 1440) -> None:
        """A screenshot of the whole page (the window grows to the page's height, then shrinks back)."""
        height = int(self.driver.execute_script("return document.body.scrollHeight"))
        self.driver.set_window_size(width, min(max(900, height + 20), 4000))
        self.wait_idle()
        self.driver.save_screenshot(path)
        self.driver.set_window_size(width, 1000)
