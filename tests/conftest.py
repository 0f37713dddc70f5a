"""Shared fixtures: an output folder per test for artefacts (screenshots, files), and Debian's
headless Chromium for the browser tests."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

OUTPUT_ROOT = Path(
    os.environ.get("HEARTSIM_TEST_OUTPUT", Path(__file__).parent.parent / "test-output")
)


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under test-output/ named after the test, for artefacts worth keeping."""
    path = OUTPUT_ROOT / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Debian's Chromium, driven by Playwright: never a downloaded browser. No skip when it is
#: missing: a browser test that silently does not run proves nothing (.ci/run installs it).
CHROMIUM = Path(os.environ.get("HEARTSIM_CHROMIUM", "/usr/bin/chromium"))
#: Headless, and nothing that reaches outside on its own (updates, sync, background fetches).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed after the test."""
    async with async_playwright() as playwright:
        # A busy 2-core CI box once took over 15 s to start Chromium: wait up to 60 s, and try
        # a second time before failing (the tests are about the pages, not the launch).
        for attempt in (1, 2):
            try:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
                )
                break
            except PlaywrightTimeoutError:
                if attempt == 2:
                    raise
        try:
            yield browser
        finally:
            await browser.close()
