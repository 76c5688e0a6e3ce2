"""The tests run on MWAA 3.3.1's package set.

MWAA installs requirements.txt under its constraint file (requirements/mwaa-3.3.1-constraints-3.12.txt, a copy of
Airflow's constraints-3.3.1 for Python 3.12) and never lets a user override its essential pins. Every package
the code needs at run time, and everything those packages need, must therefore be pinned in requirements/dev.lock
at exactly MWAA's version; otherwise the tests pass on versions MWAA never runs. Dev-only tools (pytest, ruff,
mypy, moto, playwright, ...) are outside the runtime closure and may be at any version.
"""

import sys
from dataclasses import dataclass
from importlib import metadata

import pytest

from mwaa_packages import CONSTRAINTS, ESSENTIAL, PREINSTALLED, REQUIREMENTS, mwaa_versions, read_pins, runtime_closure
from support import ROOT

pytestmark = pytest.mark.unit

# What the code imports at run time: Airflow and its providers in MWAA, the clients in MWAA and the Lambda.
RUNTIME_ROOTS = ("apache-airflow", "apache-airflow-providers-amazon", "apache-airflow-providers-elasticsearch",
                 "apache-airflow-providers-mysql", "elasticsearch", "opensearch-py", "mysqlclient", "pymysql",
                 "statsd", "pyarrow")
# Where the runtime's own pins live besides dev.lock: each must name MWAA's version.
PIN_FILES = (ROOT / "requirements.txt", ROOT / "deploy" / "lambda-requirements.txt", REQUIREMENTS / "dev.lock")


@dataclass(frozen=True)
class Mismatch:
    package: str
    pinned: str | None
    mwaa: str | None

    def __str__(self) -> str:
        if self.mwaa is None:
            return f"{self.package}=={self.pinned}: MWAA 3.3.1 neither pins nor ships it; add it to the bundle's pins"
        return f"{self.package}: pinned {self.pinned}, MWAA 3.3.1 installs {self.mwaa}"


def mismatches(packages: set[str], pins: dict[str, str], mwaa: dict[str, str]) -> list[Mismatch]:
    return sorted((Mismatch(name, pins.get(name), mwaa.get(name)) for name in packages
                   if pins.get(name) is None or pins.get(name) != mwaa.get(name)), key=str)


def test_the_copied_constraint_files_agree_with_each_other():
    constraints, essential = read_pins(CONSTRAINTS), read_pins(ESSENTIAL)
    assert {name: version for name, version in essential.items()
            if name in constraints and constraints[name] != version} == {}
    assert read_pins(PREINSTALLED)["apache-airflow"] == essential["apache-airflow"] == "3.3.1"


def test_every_runtime_package_is_pinned_at_mwaas_version():
    closure = runtime_closure(RUNTIME_ROOTS, "3.12")
    assert len(closure) > 100, "the closure walk found too little: is the venv installed from dev.lock?"
    assert [str(m) for m in mismatches(closure, read_pins(REQUIREMENTS / "dev.lock"), mwaa_versions())] == []


def test_the_installed_runtime_packages_are_the_locked_ones():
    """A venv left over from an older lock would test other versions than dev.lock names."""
    lock = read_pins(REQUIREMENTS / "dev.lock")
    running = "{}.{}".format(*sys.version_info[:2])
    installed = {name: metadata.version(name) for name in runtime_closure(RUNTIME_ROOTS, running)}
    assert {name: (version, lock.get(name)) for name, version in installed.items() if lock.get(name) != version} == {}


@pytest.mark.parametrize("pin_file", PIN_FILES, ids=lambda p: p.name)
def test_every_pin_that_mwaa_constrains_has_mwaas_version(pin_file):
    mwaa = mwaa_versions()
    pins = read_pins(pin_file)
    assert pins, f"no pins read from {pin_file}"
    assert {name: (version, mwaa[name]) for name, version in pins.items()
            if name in mwaa and mwaa[name] != version} == {}


def test_the_check_names_a_pin_that_leaves_the_constraint_file():
    mwaa = {"sqlalchemy": "2.0.51", "boto3": "1.43.56"}
    pins = {"sqlalchemy": "2.1.9", "boto3": "1.43.56", "left-pad": "1.0"}
    assert [str(m) for m in mismatches({"sqlalchemy", "boto3", "left-pad"}, pins, mwaa)] == [
        "left-pad==1.0: MWAA 3.3.1 neither pins nor ships it; add it to the bundle's pins",
        "sqlalchemy: pinned 2.1.9, MWAA 3.3.1 installs 2.0.51",
    ]


def test_python_311_and_312_need_the_same_runtime_packages():
    """docs/deploy-mwaa.md says the tests' Python 3.11 installs the same runtime packages as MWAA's 3.12:
    no Requires-Dist marker of the closure picks a backport on one and not the other."""
    assert runtime_closure(RUNTIME_ROOTS, "3.11") ^ runtime_closure(RUNTIME_ROOTS, "3.12") == set()
    assert "same runtime packages on Python 3.11 and 3.12" in (ROOT / "docs" / "deploy-mwaa.md").read_text()
