"""/docs (Swagger UI) and /redoc (ReDoc) work without internet, in a real headless Chromium
against a real heartsim server.

Every request of the page whose host is not loopback is aborted and recorded, as on a machine
without internet: the pages must render from the server alone and ask nothing of any other
host. (The same pages under jupyter-server-proxy's prefix: tests/test_jupyterlab.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Route, expect
from support import check_swagger_ui

from heartsim.server import HeartsimServer

WAIT_MS = 10_000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

expect.set_options(timeout=WAIT_MS)


class Offline:
    """A browser context where every request off loopback fails, as without internet."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.outside: list[str] = []  # what the pages tried to reach off loopback

    async def route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            await route.continue_()
        else:
            self.outside.append(url)
            await route.abort("internetdisconnected")


@pytest.fixture
async def offline(browser: Browser) -> AsyncIterator[Offline]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    offline = Offline(context)
    await context.route("**/*", offline.route)
    try:
        yield offline
    finally:
        await context.close()


@pytest.mark.timeout(60)
async def test_swagger_ui_lists_every_operation_and_runs_one_offline(
    server: HeartsimServer, offline: Offline, output_dir: Path
) -> None:
    page = await offline.context.new_page()
    await page.goto(f"{server.url}/docs")
    await check_swagger_ui(page, server.app.openapi())
    await page.screenshot(path=output_dir / "docs.png")
    assert offline.outside == []


@pytest.mark.timeout(60)
async def test_redoc_shows_every_operation_offline(
    server: HeartsimServer, offline: Offline, output_dir: Path
) -> None:
    spec = server.app.openapi()
    summaries = {op["summary"] for ops in spec["paths"].values() for op in ops.values()}
    page = await offline.context.new_page()
    await page.goto(f"{server.url}/redoc")
    await expect(page.locator("h2", has_text="Trigger an acute stress episode")).to_be_visible()
    headings = set(await page.locator("h2").all_inner_texts())
    assert summaries <= headings, summaries - headings
    await page.screenshot(path=output_dir / "redoc.png")
    # ReDoc's footer logo would come from cdn.redoc.ly: the page's policy stops the browser
    # before it asks.
    assert offline.outside == []


@pytest.mark.parametrize("page", ["docs", "redoc"])
async def test_trailing_slash_redirects_relatively_to_the_page(
    client: httpx.AsyncClient, page: str
) -> None:
    """Relative URLs in ``/docs/`` would resolve under ``/docs/``: it redirects to ``/docs``,
    relatively, so that a proxy's prefix is kept."""
    response = await client.get(f"/{page}/")
    assert response.status_code == 308
    assert response.headers["location"] == f"../{page}"
    followed = await client.get(f"/{page}/", follow_redirects=True)
    assert followed.status_code == 200 and followed.url.path == f"/{page}"


async def test_the_documentation_assets_come_from_the_server(client: httpx.AsyncClient) -> None:
    for name, kind in [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
    ]:
        response = await client.get(f"/docs/assets/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], (name, response.headers)
        assert len(response.content) > 100_000, name  # the real bundle, not a stub
