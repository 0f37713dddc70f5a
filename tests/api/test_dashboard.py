"""The dashboard (GET /) in a real headless Chromium against a real heartsim server.

Debian's Chromium (/usr/bin/chromium) driven by playwright, never a downloaded browser. Every
request and WebSocket of the page is recorded: the page must only talk to the server under test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    WebSocket,
    expect,
)

from heartsim.server import HeartsimServer

from .conftest import ServerFactory, wait_until

#: Bound of every wait on the page, ms (and s for the Python-side waits).
WAIT_MS = 8_000
WAIT_S = WAIT_MS / 1000

expect.set_options(timeout=WAIT_MS)

#: Counts the chart's stress-coloured (purple) pixels: the stress line and the area under it.
COUNT_STRESS_PIXELS = """(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 16 && b - g > 50 && b > r) count += 1;
  }
  return count;
}"""

#: The live values as the page shows them, read in one go (they change with every message).
READ_TILES = """() => Object.fromEntries(
  ["bpm", "hrv", "bp", "resp", "stress-level", "label", "stream-info"].map(
    (id) => [id, document.getElementById(id).textContent.trim()]))"""

#: Records every connection state the status indicator shows, in window.statusLog.
RECORD_STATUS = """() => {
  const status = document.getElementById("status");
  window.statusLog = [status.dataset.state];
  new MutationObserver(() => window.statusLog.push(status.dataset.state))
    .observe(status, { attributes: true, attributeFilter: ["data-state"] });
}"""


@dataclass
class Dashboard:
    """A dashboard page and everything it did on the network."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)  # WebSocket URLs, in opening order
    frames: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (socket, message)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors

    def watch_socket(self, ws: WebSocket) -> None:
        index = len(self.sockets)
        self.sockets.append(ws.url)
        ws.on("framereceived", lambda payload: self.frames.append((index, json.loads(payload))))

    def on_console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer as "Failed to load resource", and a refused
        # WebSocket handshake as "WebSocket connection to ... failed"; error answers are
        # expected here (the page shows them), anything else logged as an error is a bug.
        expected = ("Failed to load resource", "WebSocket connection to")
        if message.type == "error" and not message.text.startswith(expected):
            self.errors.append(f"console: {message.text}")

    def messages(self, socket: int, kind: str = "heartbeat") -> list[dict[str, Any]]:
        """Messages of type ``kind`` the page received on its ``socket``-th WebSocket."""
        return [m for i, m in self.frames if i == socket and m["type"] == kind]

    async def chart(self) -> dict[str, str]:
        """The chart's data-* attributes (what it currently draws)."""
        return await self.page.eval_on_selector("#chart", "canvas => ({ ...canvas.dataset })")

    async def wait_for_number(self, selector: str, at_least: float) -> None:
        """Wait until the number shown in ``selector`` is ``>= at_least``."""
        await self.page.wait_for_function(
            "([sel, min]) => Number(document.querySelector(sel).textContent) >= min",
            arg=[selector, at_least],
            timeout=WAIT_MS,
        )

    def latest_message(self) -> Locator:
        """The message area's newest entry."""
        return self.page.locator("#messages li").first


async def open_dashboard(
    browser: Browser, server: HeartsimServer, query: str = "", *, live: bool = True
) -> Dashboard:
    """Load the dashboard (``query``: e.g. ``"?token=T"``); wait until its stream is live."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    dash = Dashboard(page)
    page.on("request", lambda request: dash.requests.append(request))
    page.on("websocket", dash.watch_socket)
    page.on("console", dash.on_console)
    page.on("pageerror", lambda exc: dash.errors.append(f"uncaught: {exc}"))
    await page.goto(f"{server.url}/{query}", timeout=WAIT_MS)
    if live:
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    return dash


def assert_only_the_server_was_contacted(dash: Dashboard, server: HeartsimServer) -> None:
    assert dash.requests, "no requests recorded"
    elsewhere = [r.url for r in dash.requests if not r.url.startswith(f"{server.url}/")]
    assert elsewhere == []
    assert dash.sockets and all(url.startswith(server.ws_url) for url in dash.sockets)


async def test_live_values_chart_controls_and_server_errors(
    make_server: ServerFactory, browser: Browser, output_dir: Path
) -> None:
    server = await make_server(tick_hz=4)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        # A second person whose stress response is fast, so the test sees it within seconds.
        fast = {"person_id": "fast", "onset_tau_s": 2.0, "hr_reactivity_bpm": 50.0}
        assert (await http.post("/persons", json=fast)).status_code == 201
    dash = await open_dashboard(browser, server)
    page = dash.page
    await expect(page.locator("#sim-state")).to_have_text("simulation: stopped")
    await expect(page.locator("#bpm")).to_have_text("–")
    assert (await dash.chart())["points"] == "0"

    # Person selector: lists GET /persons; choosing one re-subscribes the stream to it.
    select = page.locator("#person-select")
    await expect(select.locator("option")).to_have_text(
        [re.compile(r"^p0 \(default\)"), re.compile(r"^fast ")]
    )
    await select.select_option("fast")
    await wait_until(lambda: len(dash.messages(1, "connected")) == 1, WAIT_S)
    assert "person=fast" in dash.sockets[1] and "since=" not in dash.sockets[1]
    assert dash.messages(1, "connected")[0]["person_id"] == "fast"
    assert page.url.endswith("?person=fast")

    # Start: values appear, follow the stream, and the chart fills.
    await page.click("#start")
    await expect(dash.latest_message()).to_have_text(re.compile("Simulation started"))
    await expect(page.locator("#sim-state")).to_have_text("simulation: running")
    await expect(page.locator("#bpm")).to_have_text(re.compile(r"^\d+$"))
    await page.wait_for_function(
        "() => Number(document.querySelector('#chart').dataset.points) >= 6", timeout=WAIT_MS
    )
    tiles = await page.evaluate(READ_TILES)
    shown_seq = int(tiles["stream-info"].rsplit("seq ", 1)[1])
    (beat,) = [m for m in dash.messages(1) if m["seq"] == shown_seq]
    assert tiles["bpm"] == str(beat["bpm"])
    assert tiles["bp"] == f"{beat['systolic']}/{beat['diastolic']}"
    assert float(tiles["stress-level"]) == pytest.approx(beat["stress_level"], abs=0.0051)
    assert float(tiles["resp"]) == pytest.approx(beat["respiration_rate"], abs=0.051)
    if beat["variability"] is None:  # RMSSD needs a few beats first
        assert tiles["hrv"] == "–"
    else:
        assert float(tiles["hrv"]) == pytest.approx(beat["variability"], abs=0.051)
    assert tiles["label"] == beat["label"] == "rest"
    rest_bpm = max(m["bpm"] for m in dash.messages(1))
    rest_chart = await dash.chart()
    rest_pixels = await page.eval_on_selector("#chart", COUNT_STRESS_PIXELS)
    assert float(rest_chart["maxStress"]) < 0.05

    # Trigger stress at a high level: label, stress gauge, heart rate and chart react.
    await page.locator("#stress-slider").fill("0.9")
    await expect(page.locator("#stress-slider-value")).to_have_text("0.90")
    await page.fill("#stress-duration", "30")
    await page.click("#trigger-stress")
    await expect(dash.latest_message()).to_have_text(
        re.compile(r"Stress event triggered for fast \(level 0\.9\)")
    )
    (trigger,) = [r.url for r in dash.requests if "/simulation/trigger-stress" in r.url]
    query = parse_qs(urlsplit(trigger).query)
    assert query == {"stress_level": ["0.9"], "duration_s": ["30"], "person": ["fast"]}
    await expect(page.locator("#label")).to_have_text("stress")
    await expect(page.locator("#label")).to_have_attribute("data-label", "stress")
    await dash.wait_for_number("#stress-level", 0.5)
    await dash.wait_for_number("#bpm", rest_bpm + 8)
    gauge = float(await page.get_attribute("#stress-gauge", "aria-valuenow") or "nan")
    assert gauge >= 0.5
    await page.wait_for_function(
        "() => Number(document.querySelector('#chart').dataset.maxStress) >= 0.5",
        timeout=WAIT_MS,
    )
    stress_chart = await dash.chart()
    assert int(stress_chart["lastSeq"]) > int(rest_chart["lastSeq"])
    assert int(stress_chart["lastBpm"]) >= rest_bpm + 8
    stress_pixels = await page.eval_on_selector("#chart", COUNT_STRESS_PIXELS)
    assert stress_pixels > rest_pixels + 1_000, (rest_pixels, stress_pixels)

    # An out-of-range baseline: the server's 422 message is shown, nothing changes.
    await page.fill("#baseline-input", "300")
    await page.click("#set-baseline")
    error = dash.latest_message()
    await expect(error).to_have_class(re.compile(r"\bmsg-error\b"))
    await expect(error).to_contain_text(re.compile(r"422 Invalid parameter: bpm .*40 and 120"))
    assert server.engine.profile("fast").resting_hr_bpm == 72.0
    await page.fill("#baseline-input", "80")
    await page.click("#set-baseline")
    await expect(dash.latest_message()).to_contain_text("Baseline of fast set to 80 bpm")
    await expect(page.locator("#base-bpm")).to_have_text("80")
    assert server.engine.profile("fast").resting_hr_bpm == 80.0

    await page.screenshot(path=output_dir / "dashboard.png", full_page=True)

    # Stop; then stress is refused and the server's 400 is shown.
    await page.click("#stop")
    await expect(dash.latest_message()).to_have_text(re.compile("Simulation stopped"))
    await expect(page.locator("#sim-state")).to_have_text("simulation: stopped")
    await page.click("#trigger-stress")
    await expect(dash.latest_message()).to_contain_text("400 Simulation not running")

    assert_only_the_server_was_contacted(dash, server)
    assert dash.errors == []


async def test_stream_reconnects_after_the_server_drops_it_and_resumes_without_gap(
    make_server: ServerFactory, browser: Browser
) -> None:
    server = await make_server(tick_hz=10)
    server.engine.start()
    dash = await open_dashboard(browser, server)
    page = dash.page
    await page.evaluate(RECORD_STATUS)
    await wait_until(lambda: len(dash.messages(0)) >= 10, WAIT_S)

    server.hub.close_all(1012, "test: stream dropped")  # the server ends every stream
    await wait_until(lambda: len(dash.messages(1)) >= 10, WAIT_S)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")

    before, after = dash.messages(0), dash.messages(1)
    assert f"since={before[-1]['seq']}" in dash.sockets[1]
    (hello,) = dash.messages(1, "connected")
    assert hello["since"] == before[-1]["seq"] and hello["missed"] == 0
    assert hello["replayed"] >= 1  # the backoff lasted several ticks: those were replayed
    seqs = [m["seq"] for m in before + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate
    status_log = await page.evaluate("() => window.statusLog")
    assert status_log[0] == "live" and status_log[-1] == "live"
    assert "reconnecting" in status_log

    # The chart holds every seq exactly once (backfilled history, live, replayed, live).
    await page.wait_for_function(
        "n => Number(document.querySelector('#chart').dataset.lastSeq) >= n",
        arg=seqs[-1],
        timeout=WAIT_MS,
    )
    chart = await dash.chart()
    assert int(chart["firstSeq"]) <= seqs[0]
    assert int(chart["points"]) == int(chart["lastSeq"]) - int(chart["firstSeq"]) + 1
    await expect(page.locator("#messages")).not_to_contain_text("gap")
    assert_only_the_server_was_contacted(dash, server)
    assert dash.errors == []


async def test_token_from_the_page_url_never_travels_in_a_url_and_401_without_it(
    make_server: ServerFactory, browser: Browser
) -> None:
    server = await make_server(tick_hz=4, token="s3cret")
    dash = await open_dashboard(browser, server, "?person=p0#token=s3cret")
    page = dash.page
    assert page.url == f"{server.url}/?person=p0"  # read once, then out of the address bar
    await page.click("#start")
    await expect(dash.latest_message()).to_have_text(re.compile("Simulation started"))
    await expect(page.locator("#bpm")).to_have_text(re.compile(r"^\d+$"))
    (start,) = [r for r in dash.requests if "/simulation/start" in r.url]
    assert (await start.all_headers())["authorization"] == "Bearer s3cret"
    # A fragment never leaves the browser; REST calls carry the token in the header, the
    # stream in its subprotocol: it is in no URL the server sees.
    assert all("s3cret" not in r.url for r in dash.requests), [r.url for r in dash.requests]
    assert dash.sockets and all("token" not in url for url in dash.sockets), dash.sockets
    assert page.url == f"{server.url}/?person=p0"

    legacy = await open_dashboard(browser, server, "?token=s3cret")  # older links still work
    assert "token" not in legacy.page.url and all("token" not in u for u in legacy.sockets)

    anonymous = await open_dashboard(browser, server, live=False)
    # The refused handshake's reason, learnt from GET /ws/heartbeat (browsers hide it).
    await expect(anonymous.page.locator("#messages")).to_contain_text(
        re.compile(r"Stream refused: 401 Unauthorized: This server requires a token")
    )
    await expect(anonymous.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    await anonymous.page.click("#stop")
    # (Not necessarily the newest message: the refused stream keeps retrying meanwhile.)
    await expect(anonymous.page.locator("#messages")).to_contain_text(
        re.compile(r"401 Unauthorized: This server requires a token")
    )
    assert server.engine.state.value == "running"
    for seen in (dash, legacy, anonymous):
        assert_only_the_server_was_contacted(seen, server)
        assert seen.errors == []


async def test_a_degraded_server_is_reported_and_its_health_report_still_used(
    make_server: ServerFactory, browser: Browser
) -> None:
    server = await make_server(tick_hz=4)
    checks = server.app.state.heartsim.health_checks
    dash = await open_dashboard(browser, server)
    page = dash.page
    await expect(page.locator("#base-bpm")).to_have_text("65")  # p0 of seed 7
    checks.append(lambda: "the store is unreachable")  # /health now answers 503
    server.engine.set_baseline(64)  # only /health's report carries it to the page
    await expect(dash.latest_message()).to_have_text(
        re.compile("Server degraded: the store is unreachable"), timeout=2 * WAIT_MS
    )
    await expect(dash.latest_message()).to_have_class(re.compile(r"\bmsg-error\b"))
    await expect(page.locator("#base-bpm")).to_have_text("64")
    checks.clear()
    await expect(dash.latest_message()).to_have_text(
        re.compile("Server healthy again"), timeout=2 * WAIT_MS
    )
    assert dash.errors == []
