"""Shared fixtures: an output folder per test for artefacts (screenshots, files)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

OUTPUT_ROOT = Path(
    os.environ.get("HEARTSIM_TEST_OUTPUT", Path(__file__).parent.parent / "test-output")
)


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under test-output/ named after the test, for artefacts worth keeping."""
    path = OUTPUT_ROOT / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    path.mkdir(parents=True, exist_ok=True)
    return path
