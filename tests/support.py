"""Helpers shared by several test modules: loopback ports, notebooks run in real kernels, and
the API documentation pages checked in a browser."""

from __future__ import annotations

import socket
import subprocess
import textwrap
from typing import Any

import nbformat
from nbclient import NotebookClient
from playwright.async_api import Page, expect


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback ``port``."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def bindable(port: int) -> bool:
    """Whether the loopback ``port`` could be bound now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_notebook(cells: list[str], timeout_s: float) -> nbformat.NotebookNode:
    """Execute ``cells`` in a fresh python3 kernel; every cell is bounded by ``timeout_s``."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(cell).strip()) for cell in cells]
    NotebookClient(
        notebook,
        timeout=timeout_s,
        startup_timeout=60,
        kernel_name="python3",
        allow_errors=False,
    ).execute()
    return notebook


def stdout_of(cell: nbformat.NotebookNode) -> str:
    """The text the cell printed."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


# ----- the API documentation pages in a browser -----------------------------------------------
#: The operations Swagger UI shows, as (METHOD, path).
_LISTED_OPERATIONS = """() => [...document.querySelectorAll(".opblock")].map((block) => [
  block.querySelector(".opblock-summary-method").textContent.trim(),
  block.querySelector(".opblock-summary-path").dataset.path])"""


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, path) of an OpenAPI document."""
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


async def check_swagger_ui(page: Page, spec: dict[str, Any]) -> None:
    """The Swagger UI open in ``page`` (at ``…/docs``) lists every operation of ``spec``, and
    "Try it out" on GET /health answers 200 from the app beside the page (``…/health``)."""
    assert page.url.endswith("/docs"), page.url
    base = page.url.removesuffix("docs")  # before deep links add a #fragment
    blocks = page.locator(".opblock")
    await expect(blocks).to_have_count(len(operations(spec)))
    listed = {tuple(pair) for pair in await page.evaluate(_LISTED_OPERATIONS)}
    assert listed == operations(spec)

    health = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/health"]')
    )
    await health.locator(".opblock-summary").click()
    await health.get_by_role("button", name="Try it out").click()
    await health.get_by_role("button", name="Execute").click()
    live = health.locator(".live-responses-table tbody .response-col_status")
    await expect(live).to_have_text("200")
    await expect(health.locator(".request-url pre")).to_have_text(f"{base}health")


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Terminate ``proc`` (kill it if it has not exited within 10 s) and close its stdout."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
