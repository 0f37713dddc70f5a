"""The package's front door: ``import heartsim`` stays light, and every exported name works."""

import subprocess
import sys

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
