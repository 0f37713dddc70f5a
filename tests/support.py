"""Helpers shared by several test modules: loopback ports and notebooks run in real kernels."""

from __future__ import annotations

import socket
import textwrap

import nbformat
from nbclient import NotebookClient


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
