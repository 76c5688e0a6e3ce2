"""The MWAA bundle (deploy/build_mwaa_bundle.py) works on its own, the way MWAA runs it.

MWAA puts only its dags folder and plugins folder on sys.path, so the DAGs are loaded in a fresh interpreter
whose PYTHONPATH is the bundle alone: a DAG file that imports anything the bundle lacks (include/, devstack/)
shows up as an import error here instead of in the MWAA console.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support import ROOT

pytestmark = pytest.mark.unit

BUILDER = ROOT / "deploy" / "build_mwaa_bundle.py"
DAG_IDS = {"es_message_export", "es_message_retry"}
DAG_FILES = {"es_message_export.py", "es_message_retry.py"}
PACKAGES = ("es_export", "es_export_airflow")
# MWAA's constraint set for Airflow 3.3.1 on Python 3.12. Its contents are on GitHub, which this machine cannot
# reach, so the pins below are checked against requirements/dev.lock (what the tests ran against), not against it.
MWAA_CONSTRAINT_URL = "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.1/constraints-3.12.txt"
# Requirements allowed to differ from requirements/dev.lock (or to be unpinned), each with the reason.
# Example: {"some-package": "MWAA's constraint set pins 1.2.3; dev.lock has 1.2.4 because ..."}.
LOCK_EXCEPTIONS: dict[str, str] = {}

# Runs in the bundle's interpreter: loads the DAGs as the DAG processor would and reports what it saw as JSON.
LOAD_SCRIPT = """
import json, sys
from pathlib import Path

from airflow import plugins_manager
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag

dags_folder, repo = Path(sys.argv[1]), Path(sys.argv[2])
# Airflow 3.3.1's DagBag has no include_examples (example DAGs are a bundle of their own; LOAD_EXAMPLES is off).
bag = DagBag(dag_folder=str(dags_folder))  # MWAA's settings: safe mode, default ignore syntax

# Which files the DAG processor would import under each ignore syntax. safe_mode=False imports every .py
# file it does not ignore, so only .airflowignore can keep the package modules out.
parsed = {}
for syntax in ("glob", "regexp"):
    conf.set("core", "dag_ignore_file_syntax", syntax)
    strict = DagBag(dag_folder=str(dags_folder), safe_mode=False)
    parsed[syntax] = sorted(stat.file for stat in strict.dagbag_stats)

import es_export, es_export_airflow

venv = Path(sys.prefix).resolve()
from_repo = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and Path(module.__file__).resolve().is_relative_to(repo)
    and not Path(module.__file__).resolve().is_relative_to(venv)
)
print(json.dumps({
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "files": sorted(stat.file for stat in bag.dagbag_stats),
    "parsed": parsed,
    "packages": {"es_export": es_export.__file__, "es_export_airflow": es_export_airflow.__file__},
    "from_repo": from_repo,
    "plugin_import_errors": plugins_manager.get_import_errors(),
}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "mwaa"
    run = subprocess.run([sys.executable, str(BUILDER), "--out", str(out)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def loaded(bundle, tmp_path_factory) -> dict:
    """What a fresh interpreter that sees only the bundle loads from its dags folder."""
    work = tmp_path_factory.mktemp("mwaa_env")
    plugins = work / "plugins"
    plugins.mkdir()
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        zf.extractall(plugins)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(bundle / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        # Only the bundle: not include/, dags/ or devstack/ of the repo (cwd is outside the repo too).
        "PYTHONPATH": os.pathsep.join([str(bundle / "dags"), str(plugins)]),
    }
    run = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(bundle / "dags"), str(ROOT)], cwd=work, env=env,
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-5000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_layout(bundle):
    dags = bundle / "dags"
    assert {p.name for p in bundle.iterdir()} == {"dags", "plugins.zip", "requirements.txt", "startup.sh"}
    assert {p.name for p in dags.glob("*.py")} == DAG_FILES
    for package in PACKAGES:
        source = {p.relative_to(ROOT / "include").as_posix() for p in (ROOT / "include" / package).rglob("*.py")}
        copied = {p.relative_to(dags).as_posix() for p in (dags / package).rglob("*.py")}
        assert copied == source
    assert not list(bundle.rglob("__pycache__")) and not list(bundle.rglob("*.pyc"))
    assert (bundle / "requirements.txt").read_bytes() == (ROOT / "requirements.txt").read_bytes()


def test_plugins_zip_holds_the_plugins_folder_and_the_packages(bundle):
    # The packages too: outside DAG parsing, Airflow 3 has only the plugins folder on sys.path.
    def files(folder, relative_to):
        return {p.relative_to(relative_to).as_posix() for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    expected = files(ROOT / "plugins", ROOT / "plugins")
    for package in ("es_export", "es_export_airflow"):
        expected |= files(ROOT / "include" / package, ROOT / "include")
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        assert zf.testzip() is None
        assert set(zf.namelist()) == expected
    assert "es_export_plugin.py" in expected and "es_export_airflow/run_mirror.py" in expected


def test_dags_load_from_the_bundle_alone(loaded):
    assert loaded["import_errors"] == {}
    assert DAG_IDS <= set(loaded["dag_ids"])
    assert loaded["files"] == sorted(DAG_FILES)
    assert loaded["plugin_import_errors"] == {}


def test_packages_resolve_inside_the_bundle(loaded, bundle):
    for name, path in loaded["packages"].items():
        assert Path(path).resolve() == (bundle / "dags" / name / "__init__.py").resolve()
    assert loaded["from_repo"] == []


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_airflowignore_keeps_package_modules_out(loaded, syntax):
    # Without the .airflowignore, safe_mode=False would list es_export/*.py and es_export_airflow/*.py too.
    assert loaded["parsed"][syntax] == sorted(DAG_FILES)


def test_startup_script_keeps_values_set_on_the_environment(bundle):
    def max_active_runs(env: dict[str, str]) -> str:
        script = f". {bundle / 'startup.sh'}; echo $ES_EXPORT_MAX_ACTIVE_RUNS"
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False).stdout.strip()

    assert max_active_runs({}) == "2"
    assert max_active_runs({"ES_EXPORT_MAX_ACTIVE_RUNS": "5"}) == "5"


def read_lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines():
        if line and not line.startswith("#") and "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def read_bundle_requirements(path: Path) -> tuple[list[str], list[Requirement]]:
    constraints, requirements = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("--constraint", "-c ")):
            constraints.append(line.split(maxsplit=1)[1].strip().strip("\"'"))
        else:
            requirements.append(Requirement(line))
    return constraints, requirements


def test_requirements_match_mwaa_constraints_and_dev_lock(bundle):
    constraints, requirements = read_bundle_requirements(bundle / "requirements.txt")
    assert constraints == [MWAA_CONSTRAINT_URL]
    assert requirements, "no requirement besides the constraint line"
    lock = read_lock()
    for req in requirements:
        name = canonicalize_name(req.name)
        if name in LOCK_EXCEPTIONS:
            continue
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not pinned with =="
        assert lock.get(name) == specs[0].version, f"{req}: requirements/dev.lock pins {lock.get(name)}"
