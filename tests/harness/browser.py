"""A real browser for the dashboard's tests: Debian's chromium, headless, driven by its
own chromedriver through Selenium.

Both paths are given, so Selenium Manager is never asked to find (or download) anything.
Every run gets a fresh profile; background networking, component updates and sync are
off, and there is no proxy: the browser talks to 127.0.0.1 only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots for review: under the repository's .test-run/ (gitignored), one folder per
# test run, kept after the run (the test prints where).
SCREENSHOTS = Path(__file__).parents[2] / ".test-run" / "screenshots"
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--window-size=1280,1000",
)


@contextmanager
def headless_chromium(root: Path) -> Iterator[WebDriver]:
    """A browser with a fresh profile under ``root`` (its driver's log beside it)."""
    root.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={root / 'profile'}")
    # The console, for Content-Security-Policy violations.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(root / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: WebDriver, condition: Any, timeout: float = 30, what: str = "") -> Any:
    """``condition(driver)`` once it is truthy, polled every 0.1 s (an element that htmx
    swapped out meanwhile is looked for again)."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
    return waiting.until(condition, what)


def screenshot_dir(test: str) -> Path:
    """A new folder for one run of ``test``'s screenshots, its path printed."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = SCREENSHOTS / f"{test}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of {test}: {folder}")
    return folder
