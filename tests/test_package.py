"""The package's front door: ``import heartsim`` stays light, and every exported name works."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import heartsim

HEAVY = ("fastapi", "httpx", "websockets", "scipy.signal", "ipywidgets", "matplotlib", "sklearn")


@pytest.mark.parametrize(
    "module",
    ["heartsim", "heartsim.cli"],  # the command line too: `heartsim simulate` and `--help`
)
def test_import_for_simulation_does_not_load_the_server_stack_or_widgets(module):
    code = f"import sys, {module}; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"


def test_every_exported_name_resolves_and_is_listed():
    for name in heartsim.__all__:
        assert getattr(heartsim, name) is not None, name
    assert set(heartsim.__all__) <= set(dir(heartsim))
    assert heartsim.Client.__module__ == "heartsim.client"
    assert heartsim.hrv.__name__ == "heartsim.hrv"
    with pytest.raises(AttributeError, match="no_such_name"):
        heartsim.no_such_name  # noqa: B018


def test_py_typed_marker_ships_with_the_package():
    # pyproject.toml's package-data lists it; type checkers of user code look for it.
    assert (Path(heartsim.__file__).parent / "py.typed").is_file()


def _bounds(lines: list[str]) -> dict[str, str]:
    """``{normalised name: requirement}`` of requirement strings like ``numpy>=1.24``."""
    bounds = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", line.strip())
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            bounds[CONDA_NAMES.get(name, name)] = match.group(2).replace(" ", "")
    return bounds


#: conda-forge names of PyPI packages, where they differ.
CONDA_NAMES = {"matplotlib-base": "matplotlib"}


def test_environment_yml_has_the_bounds_of_pyproject():
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pip_bounds = _bounds([*project["dependencies"], *project["optional-dependencies"]["dev"]])
    pip_bounds["python"] = project["requires-python"]
    environment = (root / "environment.yml").read_text().split("dependencies:", 1)[1]
    conda_lines = re.findall(r"^  - (\S.*)$", environment, re.MULTILINE)
    # Packages conda-forge lacks are installed by its pip section, from PyPI.
    pip_lines = re.findall(r"^      - ([A-Za-z]\S*)$", environment, re.MULTILINE)
    conda_bounds = _bounds(
        [line for line in conda_lines + pip_lines if line not in ("pip", "pip:")]
    )
    assert conda_bounds == pip_bounds
