"""Run a server under test with its full garbage collections logged (for ``bench_fanout.py``).

``python benchmarks/_fanout_gcwrap.py LOG heartsim serve ARGS...`` runs ``heartsim.cli`` as
``__main__`` (exactly what ``heartsim serve ARGS...`` runs); ``... LOG original|plain ARGS...``
runs ``_fanout_servers.py``. The only addition is a :data:`gc.callbacks` hook that appends one
line ``<wall time at end> <pause seconds>`` to ``LOG`` after every full (generation 2)
collection: with thousands of connections a full collection walks every tracked object of
every connection and stalls the event loop, ticks and fan-out included, for that long. The
hook costs a ``perf_counter()`` call per collection.
"""

from __future__ import annotations

import gc
import runpy
import sys
import time
from pathlib import Path
from typing import IO, Any


def install(log: IO[str]) -> None:
    """Log every full collection's end time and pause to ``log`` (line-buffered)."""
    started = [0.0]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            log.write(f"{time.time():.6f} {time.perf_counter() - started[0]:.6f}\n")

    gc.callbacks.append(hook)


def main() -> None:
    """``LOG KIND ARGS...``: see the module docstring."""
    log_path, kind, *args = sys.argv[1:]
    install(open(log_path, "w", buffering=1, encoding="utf-8"))  # noqa: SIM115 - process-long
    if kind == "heartsim":
        sys.argv = ["heartsim", *args]
        runpy.run_module("heartsim.cli", run_name="__main__", alter_sys=True)
    else:
        script = Path(__file__).resolve().parent / "_fanout_servers.py"
        sys.argv = [str(script), kind, *args]
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
