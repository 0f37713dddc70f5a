"""The control panel and the live plot in a real Jupyter kernel, executed headless by nbclient.

The server runs on the kernel's own loop (top-level ``await``), the widgets are displayed, and
buttons are clicked from Python, walking the displayed widget tree as a user's click would
reach them. Every wait is on a condition with a bound, never a fixed sleep.
"""

from __future__ import annotations

import json
import time

import nbformat
from support import run_notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

CELLS = [
    # 0: a server on the kernel's loop.
    """
    import asyncio, json
    from heartsim.server import HeartsimServer
    from heartsim.widgets import controls, live_plot

    server = HeartsimServer(port=0, tick_hz=20, seed=1)
    await server.start()


    def find(widget, description):
        \"\"\"The widget with this description inside ``widget``'s tree.\"\"\"
        for child in getattr(widget, "children", ()):
            if getattr(child, "description", None) == description:
                return child
            found = find(child, description)
            if found is not None:
                return found
        return None


    async def until(condition, timeout_s=10):
        async def poll():
            while not condition():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), timeout_s)
    """,
    # 1: the panel, displayed.
    """
    panel = controls(server)
    display(panel)
    """,
    # 2: the live plot, displayed as the cell's value.
    """
    plot = live_plot(server, window_s=30, fps=5)
    plot
    """,
    # 3: Start, then wait for data in the plot and "running" in the status line.
    """
    find(panel, "Start").click()
    await until(lambda: len(plot.data()["t"]) >= 20 and "<b>running</b>" in panel.status.value)
    """,
    # 4: an invalid action is shown in the panel, not raised in the cell.
    """
    panel.stress_duration.value = "0"
    find(panel, "Trigger stress").click()
    invalid = panel.last_error
    panel.stress_duration.value = ""
    """,
    # 5: stress: the engine's stress level rises and the plot shades the episode.
    """
    panel.stress_level.value = 1.0
    find(panel, "Trigger stress").click()
    await until(lambda: server.engine.latest()["stress_level"] > 0.05)
    await until(lambda: any(label == "stress" for label, _, _ in plot.episodes))
    print(json.dumps({
        "backend": plot.backend,
        "points": len(plot.data()["t"]),
        "line_points": len(plot.lines["bpm"].get_xdata()),
        "draws": plot.draws,
        "status": panel.status.value,
        "message": panel.message.value,
        "invalid": invalid,
        "error_after": panel.error.value,
        "stress_level": server.engine.latest()["stress_level"],
    }))
    """,
    # 6: stop everything; no widget task and no subscription is left behind.
    """
    plot.stop()
    panel.close()
    await plot.wait_stopped()
    await panel.wait_stopped()
    await server.stop()
    print(json.dumps({
        "widget_tasks": sorted(
            t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("heartsim-")
        ),
        "subscribers": server.hub.subscriber_count(),
        "server_started": server.started,
    }))
    """,
]


def last_json(cell: nbformat.NotebookNode) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    return json.loads(text.strip().splitlines()[-1])


def test_controls_and_live_plot_in_a_real_kernel() -> None:
    started = time.monotonic()
    notebook = run_notebook(CELLS, timeout_s=20)
    cells = notebook.cells

    for cell in cells:
        for output in cell.outputs:
            assert output.output_type != "error", output
            # Nothing on stderr: no warnings, no tracebacks from background tasks.
            assert output.get("name") != "stderr", output.get("text")

    # Both widgets were displayed as widgets (and the plot's plain text is stable).
    [panel_out] = cells[1].outputs
    assert panel_out.output_type == "display_data" and WIDGET_MIME in panel_out.data
    assert panel_out.data["text/plain"] == "ControlPanel(person='p0')"
    [plot_out] = cells[2].outputs
    assert plot_out.output_type == "execute_result" and WIDGET_MIME in plot_out.data
    assert plot_out.data["text/plain"] == (
        "LivePlot(person='p0', window_s=30, fps=5, backend='ipympl')"
    )
    # Clicks and waits print nothing.
    for index in (3, 4):
        assert cells[index].outputs == []

    result = last_json(cells[5])
    assert result["backend"] == "ipympl"
    assert result["points"] >= 20 and result["line_points"] == result["points"]
    assert result["draws"] >= 2
    assert "<b>running</b>" in result["status"] and " bpm" in result["status"]
    assert result["message"] == "Stress 1 triggered for p0 for 60 s"
    assert "duration_s must be between 1 and 3600, got 0" in result["invalid"]
    assert result["error_after"] == ""
    assert result["stress_level"] > 0.05

    assert last_json(cells[6]) == {"widget_tasks": [], "subscribers": 0, "server_started": False}
    assert time.monotonic() - started < 30
