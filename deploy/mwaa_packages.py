"""MWAA 3.3.1's package set, read from the copies of its files in requirements/.

The bundle builder uses it to choose the wheels of the offline bundle; tests/unit/test_mwaa_pins.py uses it to
check that every runtime package is pinned at MWAA's version. Plain standard library; only
`runtime_closure` needs `packaging` (Airflow brings it), so the online bundle builds with any Python 3.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
CONSTRAINTS = REQUIREMENTS / "mwaa-3.3.1-constraints-3.12.txt"
ESSENTIAL = REQUIREMENTS / "mwaa-3.3.1-essential-constraints.txt"
PREINSTALLED = REQUIREMENTS / "mwaa-3.3.1-preinstalled-3.12.txt"
MWAA_PYTHON = "3.12"


def canonicalize_name(name: str) -> str:
    """PEP 503's normalised name: `Flask_Login` and `flask-login` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (comments, options, hashes and markers ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].split(" --hash", 1)[0].rstrip("\\ ").strip()
        if "==" in line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name.split("[", 1)[0])] = version.strip()
    return pins


def mwaa_versions() -> dict[str, str]:
    """The version MWAA gives each package: its essential pins, its constraint file, then what the image has."""
    versions = read_pins(PREINSTALLED)
    versions.update(read_pins(CONSTRAINTS))
    versions.update(read_pins(ESSENTIAL))
    return versions


def preinstalled() -> set[str]:
    """The distributions already in MWAA's image."""
    return set(read_pins(PREINSTALLED))


def runtime_closure(roots: tuple[str, ...], python_version: str = MWAA_PYTHON) -> set[str]:
    """Every distribution the roots need, following the installed packages' Requires-Dist with markers
    evaluated for one Python version (no extras). The roots and their dependencies must be installed."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment = default_environment() | {"python_version": python_version,
                                           "python_full_version": f"{python_version}.0", "extra": ""}
    seen: set[str] = set()
    todo = [canonicalize_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(canonicalize_name(requirement.name))
    return seen


def requirement_names(requirements_file: Path) -> tuple[str, ...]:
    """The names of the packages a requirements file asks for (its pins)."""
    return tuple(read_pins(requirements_file))
