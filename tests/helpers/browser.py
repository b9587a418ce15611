"""A headless Chromium for the console's browser tests, and where their screenshots go.

Playwright drives the system's Chromium (``/usr/bin/chromium``, which ``.ci/run`` installs):
its own browser download needs the network, and the suite must run without it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.helpers.env import ROOT

ARTIFACTS = ROOT / "artifacts" / "console"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the suite may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not on PATH: apt-get install chromium (.ci/run does)")
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for one test module."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    """``artifacts/console/<name>.png``, its folder created."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
