"""The repository's habits, part of the test command: ruff lint and format, mypy.

Each runs as its own process from this environment (``python -m ruff``, ``python -m mypy``) on
the whole repository (mypy: the package, see ``[tool.mypy]``), with the configuration in
``pyproject.toml``; a failure shows the tool's own report. Their versions are capped to one minor
series in the ``dev`` extra: a newer linter judges differently, so moving on is a deliberate
change, not something a fresh install does on its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=["lint", "format"]
)
def test_ruff_is_clean(command: tuple[str, ...]) -> None:
    result = run(*command, timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy", timeout_s=240)
    assert result.returncode == 0, result.stdout + result.stderr
