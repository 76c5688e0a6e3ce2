"""The offline MWAA bundle installs with `pip install --no-index` from the bundle alone.

An environment without internet access cannot reach PyPI, so plugins.zip carries every package requirements.txt
needs that MWAA's image lacks. Here the image is stood in for by a copy of the test venv (hard links, so it is
cheap) from which everything MWAA's image does not have (requirements/mwaa-3.3.1-preinstalled-3.12.txt) is
uninstalled; the bundle's requirements are then installed into it with the network switched off for pip, the
way MWAA's `safe-pip-install` runs (`pip install --constraint <essential pins> -r requirements.txt`).

The wheels are built for this machine's Python here (MWAA's bundle has them for 3.12 on manylinux); PyPI is
needed only to download them, so this module is an integration test.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from mwaa_packages import ESSENTIAL, preinstalled
from support import build_mwaa_bundle

pytestmark = pytest.mark.integration

MWAA_PLUGINS = "/usr/local/airflow/plugins"


def build(out: Path, python: str) -> Path:
    build_mwaa_bundle(out / "online", "--offline-out", str(out / "offline"), "--offline-python", python)
    return out / "offline"


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    # PIP_NO_INDEX and an unroutable proxy: if anything asked the network, the install fails.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_PROXY": "http://127.0.0.1:9", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_CACHE_DIR": "1"}
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, env=env, check=False,
                          timeout=600)


@pytest.fixture(scope="module")
def mwaa_image(tmp_path_factory) -> Path:
    """A venv with only the packages of MWAA's image that the test venv has, at the same versions."""
    image = tmp_path_factory.mktemp("image") / "venv"
    # Hard links are cheap; a venv on another filesystem than the temporary folder needs a real copy.
    if subprocess.run(["cp", "-al", sys.prefix, str(image)], capture_output=True, check=False).returncode != 0:
        shutil.rmtree(image, ignore_errors=True)
        subprocess.run(["cp", "-a", sys.prefix, str(image)], check=True)
    extra = sorted(name for name in installed(image / "bin" / "python") if name not in preinstalled() | {"pip"})
    out = pip(image / "bin" / "python", "uninstall", "--yes", *extra)
    assert out.returncode == 0, out.stderr
    return image


def installed(python: Path) -> dict[str, str]:
    out = pip(python, "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    return {canonicalize_name(p["name"]): p["version"] for p in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def offline_bundle(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("bundle"), "current")


def test_the_image_stand_in_lacks_what_the_bundle_must_bring(mwaa_image):
    have = installed(mwaa_image / "bin" / "python")
    assert "apache-airflow" in have and "boto3" in have
    assert not {"apache-airflow-providers-mysql", "apache-airflow-providers-elasticsearch", "mysqlclient",
                "opensearch-py", "elasticsearch", "pytest"} & set(have)


def test_requirements_install_from_the_bundle_alone(mwaa_image, offline_bundle, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(offline_bundle / "plugins.zip") as zf:
        zf.extractall(plugins)
    requirements = (offline_bundle / "requirements.txt").read_text()
    assert f"--find-links {MWAA_PLUGINS}/wheels" in requirements.splitlines()
    assert f"--constraint {MWAA_PLUGINS}/constraints-3.12.txt" in requirements.splitlines()
    assert "--no-index" in requirements.splitlines()
    local = tmp_path / "requirements.txt"
    local.write_text(requirements.replace(MWAA_PLUGINS, str(plugins)))

    python = mwaa_image / "bin" / "python"
    out = pip(python, "install", "--constraint", str(ESSENTIAL), "-r", str(local))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    have = installed(python)
    for name in ("apache-airflow-providers-mysql", "apache-airflow-providers-elasticsearch", "opensearch-py",
                 "mysqlclient", "elasticsearch"):
        assert name in have, name

    # The installed image runs the bundle: the DAGs parse and the drivers import.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
           "PYTHONPATH": str(tmp_path / "python"), "PYTHONDONTWRITEBYTECODE": "1"}
    script = ("import MySQLdb, opensearchpy, elasticsearch\n"
              "from airflow.dag_processing.dagbag import BundleDagBag\n"
              "from pathlib import Path\n"
              f"bag = BundleDagBag(dag_folder={str(offline_bundle / 'dags')!r}, "
              f"bundle_path=Path({str(offline_bundle / 'dags')!r}), bundle_name='dags-folder')\n"
              "assert not bag.import_errors, bag.import_errors\n"
              "print(sorted(bag.dag_ids))\n")
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "es_message_export" in run.stdout and "es_message_retry" in run.stdout


def test_the_mwaa_bundle_carries_wheels_for_python_312_on_manylinux(tmp_path):
    bundle = build(tmp_path, "3.12")
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        names = [n.removeprefix("wheels/") for n in zf.namelist() if n.startswith("wheels/")]
        assert "constraints-3.12.txt" in zf.namelist()
    compiled = [n for n in names if n.endswith(".whl") and "-none-any" not in n]
    assert compiled and all("-cp312-" in n and "manylinux" in n and "x86_64" in n for n in compiled), compiled
    # mysqlclient is source-only on PyPI for Linux; MWAA's image builds it (gcc, MariaDB headers), with the
    # setuptools wheel for its build.
    assert "mysqlclient-2.2.8.tar.gz" in names
    assert any(n.startswith("setuptools-") for n in names)
    assert not (bundle / "wheels").exists(), "the build leaves only plugins.zip"
