"""The quickstart notebook, and the dashboard behind jupyter-server-proxy, in a real JupyterLab
and a real (headless) browser.

JupyterLab runs as a subprocess on a free loopback port, serving a temporary copy of
``notebooks/01_quickstart.ipynb``, with everything that would reach outside switched off (news,
update check, extension manager). Debian's Chromium (never a downloaded browser), driven by
Playwright, opens the notebook and runs it from the Run menu as a user would: "Run All Above
Selected Cell" with the last cell selected, because that cell stops everything (it runs at the
end of the test). Then, in the page:

- the control panel and the ipympl figure render, and no "Error displaying widget" appears;
- the heart rate in the panel's status line changes over time, and the figure redraws;
- clicking "Trigger stress" reaches the kernel (the panel reports the episode) and the status
  line shows the stress level rising, the label ``stress`` and a higher heart rate;
- the final cell stops the plot, the panel and the server.

Every request and WebSocket of the page is recorded: all must stay on loopback. A screenshot of
the panel and the live figure, the request list and JupyterLab's log are saved to the test's
output folder. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, WebSocket, expect
from support import check_swagger_ui, free_port

from heartsim.server import HeartsimServer

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01_quickstart.ipynb"
#: JupyterLab and its lab extensions that the notebook's widgets need.
WIDGET_EXTENSIONS = {"@jupyter-widgets/jupyterlab-manager", "jupyter-matplotlib"}
START_TIMEOUT_S = 30.0
RUN_TIMEOUT_MS = 60_000  # running the notebook's cells (about 15 s)
WAIT_MS = 15_000  # any other wait on the page
#: Heart rate is compared as means over this long, about one breath: breathing swings it by a
#: few bpm (respiratory sinus arrhythmia), a 0.25 rise in stress level raises it by about 10.
BREATH_S = 4.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: The heartsim server's own token in the proxy test (not JupyterLab's).
HEARTSIM_TOKEN = "heartsim-s3cret"

expect.set_options(timeout=WAIT_MS)


@dataclass
class Lab:
    """A running JupyterLab: where it is, and its log."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def notebook_url(self, name: str) -> str:
        # ?reset: a fresh workspace, whatever a previous session left open.
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


def _settings(root: Path) -> None:
    """User settings: no news, no update check (nothing asks to fetch anything)."""
    folder = root / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True)
    settings = {"fetchNews": "false", "checkForUpdates": False}
    (folder / "notification.jupyterlab-settings").write_text(json.dumps(settings))


def _wait_until_serving(lab: Lab) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    headers = {"Authorization": f"token {lab.token}"}
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {lab.process.returncode}:\n{lab.log.read_text()}")
        try:
            if httpx.get(f"{lab.url}/api/status", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT_S} s:\n{lab.log.read_text()}")


def _assert_offline(lab: Lab) -> None:
    """The server side fetches nothing: no news feed, no update check, no extension index."""
    headers = {"Authorization": f"token {lab.token}"}
    news = httpx.get(f"{lab.url}/lab/api/news", headers=headers, timeout=5).json()
    assert news == {"news": []}, news
    update = httpx.get(f"{lab.url}/lab/api/update", headers=headers, timeout=5).json()
    assert update == {"notification": None}, update
    listing = httpx.get(f"{lab.url}/lab/api/extensions", headers=headers, timeout=5)
    assert listing.status_code == 200, listing.text
    assert "Extension Manager is 'readonly'" in lab.log.read_text()


def _shut_down(lab: Lab) -> None:
    """Ask JupyterLab to shut down (it stops the kernel), bounded; kill it if it won't."""
    if lab.process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            httpx.post(
                f"{lab.url}/api/shutdown",
                headers={"Authorization": f"token {lab.token}"},
                timeout=5,
            )
    try:
        lab.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(lab.process.pid, signal.SIGKILL)  # its own session: it and its kernels
        lab.process.wait(timeout=5)


@pytest.fixture
def jupyterlab(tmp_path: Path, output_dir: Path) -> Iterator[Lab]:
    """JupyterLab serving a copy of the quickstart notebook, on loopback, offline."""
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "lab-settings"
    _settings(settings)
    env = {
        **os.environ,
        # Nothing of the user's Jupyter or IPython set-up, and nothing written there.
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    port = free_port()
    token = secrets.token_hex(16)
    log = output_dir / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, process, log)
    try:
        _wait_until_serving(lab)
        _assert_offline(lab)
        yield lab
    finally:
        _shut_down(lab)


# ----- reading the page ----------------------------------------------------------------------
STATUS_RE = re.compile(
    r"(?P<bpm>\d+) bpm · RMSSD [\d.]+ ms · stress (?P<stress>[\d.]+) · (?P<label>\w+)"
)


@dataclass(frozen=True)
class Status:
    """The panel's status line, parsed."""

    bpm: int
    stress: float
    label: str


async def read_status(line: Locator) -> Status:
    text = await line.inner_text()
    match = STATUS_RE.search(text)
    assert match, f"unexpected status line: {text!r}"
    return Status(int(match["bpm"]), float(match["stress"]), match["label"])


async def sample_statuses(line: Locator, page: Page, seconds: float) -> list[Status]:
    """The status line, read every 0.25 s for ``seconds``."""
    samples = []
    for _ in range(round(seconds / 0.25)):
        samples.append(await read_status(line))
        await page.wait_for_timeout(250)
    return samples


def mean_bpm(samples: list[Status]) -> float:
    return sum(s.bpm for s in samples) / len(samples)


async def wait_for_status(
    line: Locator, page: Page, condition: Callable[[Status], bool], what: str
) -> Status:
    """Poll the status line until ``condition(status)`` holds, at most ``WAIT_MS``."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        status = await read_status(line)
        if condition(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {WAIT_MS / 1000:g} s (last: {status})")
        await page.wait_for_timeout(200)


def widget_button(page: Page, label: str) -> Locator:
    """The ipywidgets button labelled ``label`` (not JupyterLab's own buttons)."""
    return page.locator("button.widget-button").filter(
        has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")
    )


async def wait_for_redraw(figure: Locator, page: Page, before: bytes) -> None:
    """Wait until the figure looks different from ``before`` (a PNG of it), at most WAIT_MS."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while await figure.screenshot() == before:
        if time.monotonic() > deadline:
            pytest.fail(f"the live figure did not change within {WAIT_MS / 1000:g} s")
        await page.wait_for_timeout(250)


async def cell(page: Page, text: str) -> Locator:
    """The notebook cell whose source contains ``text``."""
    cells = page.locator(".jp-Notebook .jp-Cell").filter(has_text=text)
    await expect(cells).to_have_count(1)
    return cells.first


# ----- the test --------------------------------------------------------------------------------
@pytest.mark.timeout(180)
async def test_quickstart_runs_in_jupyterlab(
    jupyterlab: Lab, browser: Browser, output_dir: Path
) -> None:
    requests: list[str] = []  # every URL the page asked for, WebSockets included
    console_errors: list[str] = []
    context = await browser.new_context(viewport={"width": 1280, "height": 1300})
    context.on("request", lambda request: requests.append(request.url))
    page = await context.new_page()
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        await run_quickstart(page, jupyterlab, output_dir)
    except BaseException:
        await page.screenshot(path=output_dir / "failure.png")
        raise
    finally:
        await context.close()
        redacted = [url.replace(jupyterlab.token, "TOKEN") for url in requests]
        (output_dir / "requests.txt").write_text("\n".join(redacted) + "\n")
        (output_dir / "console-errors.txt").write_text("\n".join(console_errors) + "\n")

    outside = [url for url in requests if urlsplit(url).hostname not in LOOPBACK]
    outside = [url for url in outside if not url.startswith(("data:", "blob:", "about:"))]
    assert not outside, f"requests that left loopback: {outside}"
    assert any(url.startswith("ws://127.0.0.1") for url in requests), "no kernel WebSocket seen"
    # Chromium logs every 4xx answer as "Failed to load resource"; anything else is a bug.
    errors = [text for text in console_errors if not text.startswith("Failed to load resource")]
    assert not errors, errors


async def run_quickstart(page: Page, lab: Lab, output_dir: Path) -> None:
    """Open the notebook, run it, and check what the page shows (see the module docstring)."""
    await page.goto(lab.notebook_url(NOTEBOOK.name), timeout=WAIT_MS * 2)

    # The widget renderers are JupyterLab extensions: they must be loaded.
    config = json.loads(await page.locator("#jupyter-config-data").text_content() or "{}")
    loaded = {extension["name"] for extension in config["federated_extensions"]}
    assert loaded >= WIDGET_EXTENSIONS, loaded

    # Wait for the kernel, select the last cell (it stops everything), run all cells above it.
    await expect(page.locator(".jp-Notebook")).to_be_visible(timeout=WAIT_MS * 2)
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    await expect(idle).to_have_count(1, timeout=WAIT_MS * 2)
    stop_cell = await cell(page, "await server.stop()")
    await stop_cell.locator(".jp-InputPrompt").click()
    await page.locator(".lm-MenuBar-item", has_text="Run").click()
    await page.get_by_text("Run All Above Selected Cell", exact=True).click()
    recovering = await cell(page, 'first_message(lambda m: m["label"] == "recovery")')
    await expect(recovering.locator(".jp-OutputArea-output")).to_have_text(
        "'recovery'", timeout=RUN_TIMEOUT_MS
    )

    # The control panel and the live figure render, without widget errors.
    for name in ("Start", "Stop", "Set baseline (bpm)", "Trigger stress"):
        await expect(widget_button(page, name)).to_be_visible()
    figure = page.locator(".jupyter-matplotlib-figure canvas").first
    await expect(figure).to_be_visible()
    assert await page.get_by_text("Error displaying widget").count() == 0
    status = page.locator(".widget-html-content").filter(has_text="RMSSD")
    await expect(status).to_have_count(1)
    await status.evaluate("e => e.closest('.jp-Cell').scrollIntoView({block: 'start'})")

    # Live: the heart rate changes over time, and the figure redraws.
    first = await read_status(status)
    before_image = await figure.screenshot()
    await wait_for_status(status, page, lambda s: s.bpm != first.bpm, "a new heart rate")
    await wait_for_redraw(figure, page, before_image)

    # "Trigger stress" in the page: the kernel acts on it, the stress level and heart rate rise.
    resting = await sample_statuses(status, page, BREATH_S)
    await widget_button(page, "Trigger stress").click()
    await expect(page.get_by_text("Stress 0.8 triggered for p0")).to_be_visible()
    start_level = resting[-1].stress
    await wait_for_status(
        status,
        page,
        lambda s: s.label == "stress" and s.stress >= start_level + 0.25,
        f"the stress level rising from {start_level} by 0.25",
    )
    stressed = await sample_statuses(status, page, BREATH_S)
    (output_dir / "status-samples.json").write_text(
        json.dumps({"before the click": resting, "after": stressed}, default=vars, indent=1)
    )
    assert mean_bpm(stressed) > mean_bpm(resting) + 3, (resting, stressed)
    await page.screenshot(path=output_dir / "jupyterlab_quickstart.png")

    # The last cell stops everything.
    await stop_cell.locator(".jp-InputPrompt").click()
    await page.keyboard.press("Shift+Enter")
    await expect(stop_cell.locator(".jp-OutputArea-output")).to_have_text(
        "('stopped', False, False)", timeout=WAIT_MS
    )
    # The panel tells the truth: not its last "running", but that the server is gone.
    await expect(status).to_have_count(0)
    disconnected = page.locator(".widget-html-content").filter(has_text="disconnected")
    await expect(disconnected).to_have_text(re.compile(r"^disconnected · p0 · server "))
    for name in ("Start", "Stop", "Trigger stress"):
        await expect(widget_button(page, name)).to_be_disabled()
    assert await page.get_by_text("Error displaying widget").count() == 0


@pytest.mark.timeout(120)
async def test_dashboard_through_jupyter_server_proxy(
    jupyterlab: Lab, browser: Browser, output_dir: Path
) -> None:
    """The dashboard as JupyterHub users open it (``ServerHandle.dashboard_url``): under
    ``/proxy/PORT/`` of the Jupyter server, relayed by jupyter-server-proxy. The page, its REST
    calls (POST included) and its WebSocket all go through the prefix, and nothing else. The
    server has a token, given as ``#token=``: the proxy relays the stream's token subprotocol
    and the REST calls' header, and the token appears in no URL. Its "API documentation" link
    opens Swagger UI under the prefix, which lists every operation and whose "Try it out"
    reaches the app through the prefix; ReDoc renders there too."""
    server = HeartsimServer(port=0, tick_hz=10, token=HEARTSIM_TOKEN)
    await server.start()
    prefix = f"{jupyterlab.url}/proxy/{server.port}/"
    requests: list[tuple[str, str]] = []
    refused: list[str] = []  # never sent: the page's Content-Security-Policy forbade them
    sockets: list[str] = []
    heartbeats: list[dict[str, Any]] = []

    def watch(ws: WebSocket) -> None:
        sockets.append(ws.url)
        ws.on("framereceived", lambda payload: heartbeats.append(json.loads(payload)))

    try:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append((r.method, r.url)))
        page.on("requestfailed", lambda r: refused.append(r.url) if r.failure == "csp" else None)
        page.on("websocket", watch)
        # The Jupyter token authenticates the first request; a cookie the rest.
        page_url = f"{prefix}?token={jupyterlab.token}#token={HEARTSIM_TOKEN}"
        await page.goto(page_url, timeout=WAIT_MS)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await page.click("#start")
        await expect(page.locator("#sim-state")).to_have_text("simulation: running")
        await expect(page.locator("#bpm")).to_have_text(re.compile(r"^\d+$"))
        await page.locator("#stress-slider").fill("0.9")
        await page.click("#trigger-stress")
        await expect(page.locator("#label")).to_have_text("stress")
        await page.screenshot(path=output_dir / "dashboard_via_proxy.png")

        await page.get_by_role("link", name="API documentation").click()
        await page.wait_for_url(f"{prefix}docs")
        await check_swagger_ui(page, server.app.openapi())
        await page.screenshot(path=output_dir / "docs_via_proxy.png")
        await page.goto(f"{prefix}redoc/")  # redirected (relatively) to .../redoc
        await expect(page.locator("h2", has_text="Start the simulation")).to_be_visible()
        assert page.url == f"{prefix}redoc"
        await page.close()
    finally:
        await server.stop()

    assert server.engine.state.value == "running"
    assert any(m.get("type") == "heartbeat" and m["label"] == "stress" for m in heartbeats)
    posts = [url for method, url in requests if method == "POST"]
    assert any("/simulation/start" in url for url in posts), posts
    assert any("/simulation/trigger-stress" in url for url in posts), posts
    # In-page objects (ReDoc's search worker is a blob:) are no requests to anywhere; nor is
    # what the browser refused to send (ReDoc's footer logo, from cdn.redoc.ly).
    sent = [url for _, url in requests if url not in refused]
    outside = [url for url in sent if not url.startswith((prefix, "blob:", "data:"))]
    assert outside == [], outside
    ws_prefix = "ws" + prefix.removeprefix("http")
    assert sockets and all(url.startswith(ws_prefix) for url in sockets), sockets
    assert all(HEARTSIM_TOKEN not in url for _, url in requests + [("", u) for u in sockets])
