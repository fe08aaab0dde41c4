"""
A real headless browser for tests: Debian's Chromium driven by Selenium through Debian's
chromedriver (C{./install.sh test} installs both). Every call blocks, so tests run their
browser steps in a thread while the reactor goes on serving the daemon the browser talks to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

# Where tests leave screenshots and page sources for people to look at.
ARTIFACTS = Path(
    os.environ.get("VORCHD_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts")
)


def missing() -> str | None:
    """
    Why no browser can be driven here, or None if one can.
    """
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


class Browser:
    """
    One headless Chromium with a fresh profile, closed by L{quit}.
    """

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="vorchd-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def wait(self, condition, what: str, timeout: float = 20.0):
        """
        Poll C{condition()} until it gives something true, and give that; fail saying
        C{what} was awaited after C{timeout} seconds. Elements missing, or replaced
        while polled (the page re-renders), count as not yet.
        """
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except (
                StaleElementReferenceException,
                NoSuchElementException,
                IndexError,  # an element looked for in a list is not there yet
                ValueError,  # nor one unpacked from one
            ):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what}")
            time.sleep(0.1)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def save(self, name: str) -> Path:
        """
        A screenshot of the page as C{name}.png among the test artifacts, with the page's
        HTML beside it.
        """
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(shot))
        (ARTIFACTS / f"{name}.html").write_text(self.driver.page_source)
        return shot

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
