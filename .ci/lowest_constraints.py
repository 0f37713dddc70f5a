"""Print a pip constraints file pinning every requirement of pyproject.toml to its lower bound.

``python .ci/lowest_constraints.py > lowest.txt`` turns ``numpy>=1.24`` into ``numpy==1.24``
for the dependencies and the ``dev`` extra, so ``pip install -c lowest.txt -e '.[dev]'``
installs the oldest versions we claim to support (what a user with an older environment gets).
A requirement without a ``>=`` bound is an error: every dependency must state the oldest
version that works.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lower_bounds(pyproject: Path) -> dict[str, str]:
    """``{name: lowest version}`` of the project's dependencies and its ``dev`` extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    bounds = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement.split(";")[0])
        lowest = re.search(r">=\s*([^,\s]+)", match.group(2)) if match else None
        if match is None or lowest is None:
            raise SystemExit(f"{requirement!r} has no '>=' lower bound")
        bounds[match.group(1)] = lowest.group(1)
    return bounds


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    for name, version in lower_bounds(root / "pyproject.toml").items():
        sys.stdout.write(f"{name}=={version}\n")


if __name__ == "__main__":
    main()
