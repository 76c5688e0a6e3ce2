"""The MWAA bundle (deploy/build_mwaa_bundle.py) works on its own, the way MWAA runs it.

MWAA's image sets PYTHONPATH=/python (its own code; a startup script cannot change it); Airflow appends the
plugins folder (plugins.zip unpacked) to sys.path in every component when it is imported, and the DAGs folder
only in the DAG processor and task runner, after the plugins folder. The bundle is loaded here in a fresh
interpreter with exactly that: an empty stand-in for /python, nothing of the repo, Airflow's own path handling.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support import ROOT, build_mwaa_bundle

pytestmark = pytest.mark.unit

DAG_IDS = {"es_message_export", "es_message_retry", "es_message_refresh"}
DAG_FILES = {"es_message_export.py", "es_message_retry.py", "es_message_refresh.py"}
PACKAGES = ("es_export", "es_export_airflow")
MWAA_CONSTRAINT_URL = "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.1/constraints-3.12.txt"

# Runs in the bundle's interpreter and reports what it saw as JSON: first what a component that parses no DAG
# (triggerer, api-server, scheduler) imports, then the DAGs as the DAG processor parses them, then what a task
# run sees after the task runner put the DAGs folder on sys.path.
LOAD_SCRIPT = """
import json, sys
from pathlib import Path

import airflow  # settings.initialize(): the plugins folder joins sys.path here, in every component
import es_export_airflow.batch_sensor, es_export_airflow.run_mirror, es_export.pipeline
from airflow._shared.module_loading import import_string  # as the triggerer loads a trigger by classpath
trigger_class = import_string("es_export_airflow.triggers.BatchesSettledTrigger")
before_parsing = {"es_export": es_export.__file__, "es_export_airflow": es_export_airflow.__file__,
                  "trigger": sys.modules[trigger_class.__module__].__file__}

from airflow import plugins_manager
from airflow.dag_processing.dagbag import BundleDagBag

dags_folder, repo = Path(sys.argv[1]), Path(sys.argv[2])
bag = BundleDagBag(dag_folder=str(dags_folder), bundle_path=dags_folder, bundle_name="dags-folder")
for name in list(sys.modules):
    if name.split(".")[0] in ("es_export", "es_export_airflow"):
        del sys.modules[name]
import es_export, es_export_airflow  # what a task imports once the DAGs folder is on sys.path too

venv = Path(sys.prefix).resolve()
from_repo = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and Path(module.__file__).resolve().is_relative_to(repo)
    and not Path(module.__file__).resolve().is_relative_to(venv)
)
print(json.dumps({
    "sys_path": sys.path,
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "files": sorted(stat.file for stat in bag.dagbag_stats),
    "before_parsing": before_parsing,
    "in_a_task": {"es_export": es_export.__file__, "es_export_airflow": es_export_airflow.__file__},
    "from_repo": from_repo,
    "plugins": [p.name for p in plugins_manager.get_plugins()] if hasattr(plugins_manager, "get_plugins") else None,
    "plugin_import_errors": plugins_manager.get_import_errors(),
}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_mwaa_bundle(tmp_path_factory.mktemp("bundle") / "mwaa")


def load_like_mwaa(bundle: Path, work: Path, dags: Path | None = None) -> dict:
    """Run LOAD_SCRIPT with MWAA's paths: /python (here an empty folder), plugins.zip unpacked, the DAGs."""
    plugins, python = work / "plugins", work / "python"
    python.mkdir(parents=True)
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        zf.extractall(plugins)
    dags = dags or bundle / "dags"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "PYTHONPATH": str(python),
        "PYTHONDONTWRITEBYTECODE": "1",  # leave the bundle as built
    }
    run = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(dags), str(ROOT)], cwd=work, env=env,
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-5000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded(bundle, tmp_path_factory) -> dict:
    return load_like_mwaa(bundle, tmp_path_factory.mktemp("mwaa_env"))


def test_layout_has_one_copy_of_the_code(bundle):
    assert {p.name for p in bundle.iterdir()} == {"dags", "plugins.zip", "requirements.txt", "startup.sh"}
    assert {p.name for p in (bundle / "dags").iterdir()} == DAG_FILES
    assert not list(bundle.rglob("__pycache__")) and not list(bundle.rglob("*.pyc"))
    assert (bundle / "requirements.txt").read_bytes() == (ROOT / "requirements.txt").read_bytes()


def test_plugins_zip_holds_the_plugins_folder_and_the_packages(bundle):
    def files(folder, relative_to):
        return {p.relative_to(relative_to).as_posix() for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    expected = files(ROOT / "plugins", ROOT / "plugins")
    for package in PACKAGES:
        expected |= files(ROOT / "include" / package, ROOT / "include")
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        assert zf.testzip() is None
        assert set(zf.namelist()) == expected
    assert "es_export_plugin.py" in expected and "es_export_airflow/run_mirror.py" in expected


def test_dags_and_plugin_load_from_the_bundle_alone(loaded):
    assert loaded["import_errors"] == {}
    assert DAG_IDS <= set(loaded["dag_ids"])
    assert loaded["files"] == sorted(DAG_FILES)
    assert loaded["plugin_import_errors"] == {}
    assert loaded["from_repo"] == []


def test_every_component_imports_the_packages_from_the_plugins_folder(loaded):
    plugins = Path(loaded["sys_path"][loaded["sys_path"].index(next(p for p in loaded["sys_path"]
                                                                   if p.endswith("/plugins")))])
    for stage in ("before_parsing", "in_a_task"):
        for name, path in loaded[stage].items():
            expected = "es_export_airflow/triggers.py" if name == "trigger" else f"{name}/__init__.py"
            assert Path(path) == plugins / expected, (stage, name, path)
    # MWAA's order: /python first, the plugins folder before the DAGs folder.
    path = loaded["sys_path"]
    assert path.index(next(p for p in path if p.endswith("/python"))) < path.index(str(plugins))
    assert path.index(str(plugins)) < path.index(next(p for p in path if p.endswith("/dags")))


def test_package_folders_left_in_dags_by_an_older_release_are_not_used(bundle, tmp_path):
    """Older bundles shipped the packages in dags/ too; a copy left there must not shadow plugins.zip."""
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_file in (bundle / "dags").glob("*.py"):
        (dags / dag_file.name).write_bytes(dag_file.read_bytes())
    for package in PACKAGES:
        (dags / package).mkdir()
        (dags / package / "__init__.py").write_text("raise ImportError('the stale copy in dags/ was imported')\n")
    loaded = load_like_mwaa(bundle, tmp_path / "work", dags=dags)
    assert loaded["import_errors"] == {}
    assert all("/plugins/" in path for path in loaded["in_a_task"].values()), loaded["in_a_task"]


def test_startup_script_keeps_values_set_on_the_environment(bundle):
    def max_active_runs(env: dict[str, str]) -> str:
        script = f". {bundle / 'startup.sh'}; echo $ES_EXPORT_MAX_ACTIVE_RUNS"
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False).stdout.strip()

    assert max_active_runs({}) == "2"
    assert max_active_runs({"ES_EXPORT_MAX_ACTIVE_RUNS": "5"}) == "5"


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


def test_requirements_are_pinned_with_mwaas_constraint_line(bundle):
    """Each requirement pinned with ==; test_mwaa_pins checks the versions against MWAA's constraint file."""
    constraints, requirements = read_bundle_requirements(bundle / "requirements.txt")
    assert constraints == [MWAA_CONSTRAINT_URL]
    assert requirements, "no requirement besides the constraint line"
    for req in requirements:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not pinned with =="


def test_rds_ca_bundle_travels_in_plugins_zip_where_the_connection_names_it(tmp_path):
    ca = tmp_path / "global-bundle.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = build_mwaa_bundle(tmp_path / "mwaa", "--rds-ca-bundle", str(ca))
    with zipfile.ZipFile(out / "plugins.zip") as zf:
        assert zf.read("rds-ca-bundle.pem") == ca.read_bytes()
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert '"ca": "/usr/local/airflow/plugins/rds-ca-bundle.pem"' in documented

    ca.write_text("<html>not a bundle</html>")
    run = subprocess.run([sys.executable, str(ROOT / "deploy" / "build_mwaa_bundle.py"), "--out", str(tmp_path / "x"),
                          "--rds-ca-bundle", str(ca)], capture_output=True, text=True, check=False)
    assert run.returncode != 0 and "is not a PEM bundle" in run.stderr
