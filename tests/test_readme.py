"""Every Python block of README.md runs on its own, each in a fresh Jupyter kernel (what a reader
pastes into a notebook: top-level ``await`` included), in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{k}" for k in range(len(BLOCKS))])
def test_readme_block_runs_on_its_own(block: str, tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(block)]
    NotebookClient(
        notebook,
        timeout=240,
        startup_timeout=60,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    errors = [o for o in notebook.cells[0].outputs if o.output_type == "error"]
    assert not errors, errors
