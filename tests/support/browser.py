"""A real headless Chromium through selenium (Debian's chromium + chromium-driver, ``make chromium``), for the
door console's and the fleet console's browser tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MISSING = "chromium and chromium-driver not installed (make chromium)"


def chromium_installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)


@contextmanager
def headless_chromium(window: str = "1280,860") -> Iterator[Any]:
    """A fresh profile (removed after), no network of its own beyond the page under test, ``window`` as "W,H"."""
    from selenium import webdriver

    profile = tempfile.mkdtemp(prefix="facegate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
