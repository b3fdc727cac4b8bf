"""Debian's headless Chromium through Debian's chromedriver for the browser tests (nothing is
downloaded): without selenium, chromium or chromedriver a test skips outside CI and fails
under CI=true."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.conftest import require_tool, unavailable


def headless_chromium(width: int, height: int) -> Iterator[Any]:
    """A driver for a window of width x height CSS px, quit when the generator closes."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:  # the dev extras bring it
        unavailable("selenium is not installed (pip install -e '.[dev]')")
        raise
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver_path), options=options)
    d.set_window_size(width, height)
    try:
        yield d
    finally:
        d.quit()
