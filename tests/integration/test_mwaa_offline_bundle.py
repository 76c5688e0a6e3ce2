"""The offline MWAA bundle installs with `pip install --no-index` from the bundle alone.

An environment without internet access cannot reach PyPI, so plugins.zip carries every package requirements.txt
needs that MWAA's image lacks. Here the image is stood in for by a copy of the test venv (hard links, so it is
cheap) from which everything MWAA's image does not have (requirements/mwaa-3.3.1-preinstalled-3.12.txt) is
uninstalled; the bundle's requirements are then installed into it with the network switched off for pip, the
way MWAA's `safe-pip-install` runs (`pip install --constraint <essential pins> -r requirements.txt`).

On Python 3.12 (MWAA's, which `make venv` chooses wherever the machine has it) the stand-in installs the
bundle's own wheels, the cp312 manylinux ones MWAA gets; on another Python, wheels built for it. Then the
installed image parses both DAGs and exports one batch. PyPI is needed only to download the wheels, so this
module is an integration test.
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


MWAA_PYTHON = sys.version_info[:2] == (3, 12)


@pytest.fixture(scope="module")
def offline_bundle(tmp_path_factory) -> Path:
    """MWAA's own bundle on MWAA's Python; elsewhere the same bundle with wheels for this interpreter."""
    return build(tmp_path_factory.mktemp("bundle"), "3.12" if MWAA_PYTHON else "current")


def test_the_image_stand_in_lacks_what_the_bundle_must_bring(mwaa_image):
    have = installed(mwaa_image / "bin" / "python")
    assert "apache-airflow" in have and "boto3" in have
    assert not {"apache-airflow-providers-mysql", "apache-airflow-providers-elasticsearch", "mysqlclient",
                "opensearch-py", "elasticsearch", "pytest"} & set(have)


# What the installed image runs with the bundle's code alone (plugins.zip's packages on sys.path, as
# Airflow puts the plugins folder there): one batch of a day, extract to S3, with MWAA's mysqlclient.
ONE_BATCH = """
import json, os, sys
sys.path.insert(0, os.environ["PLUGINS"])
from datetime import datetime, timedelta, timezone
from es_export import clients, pipeline, search
from es_export.config import ExportConfig, RunParams
cfg = ExportConfig.from_mapping(json.loads(os.environ["EXPORT_CONFIG"]))
conn = clients.mysql(clients.MySQLSettings.from_env(database=os.environ["TRACKING_DB"]), driver="mysqldb")
es = search.connect(search.SearchSettings(url=os.environ["ES_URL"]))
start = datetime.fromisoformat(os.environ["DAY"]).replace(tzinfo=timezone.utc)
params = RunParams(start=start, end=start + timedelta(days=1))
job = pipeline.open_job(conn, dag_id="es_message_export", run_id="offline-bundle", params=params)
pipeline.extract(es, conn, cfg, job)
(batch,) = pipeline.plan(conn, cfg, job, params)
result = pipeline.process_batch(es, conn, clients.s3(4), cfg, batch, run_id=job.run_id)
print(json.dumps({"python": sys.version.split()[0], "completed": result.completed, "size": batch.size}))
"""


def test_requirements_install_from_the_bundle_alone(mwaa_image, offline_bundle, tmp_path, es, s3):
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

    # ...and exports a batch with the installed packages alone.
    from datetime import date

    import seed_data
    from support import new_tracking_database, own_indices

    seed = seed_data.SeedConfig(messages=20, days=1, start=date(2025, 10, 1), seed=4, large=0)
    with own_indices(es, seed, "offline") as indices:
        bucket = f"offline-{tmp_path.name[-8:].lower().replace('_', '-')}"
        s3.create_bucket(Bucket=bucket)
        new_tracking_database("tracking_test_offline").close()
        batch_env = {**env, "PLUGINS": str(plugins), "TRACKING_DB": "tracking_test_offline", "DAY": "2025-10-01",
                     "EXPORT_CONFIG": json.dumps({**indices, "bucket": bucket}),
                     **{k: os.environ[k] for k in ("ES_URL", "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER",
                                                   "MYSQL_PASSWORD", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}}
        run = subprocess.run([str(python), "-c", ONE_BATCH], capture_output=True, text=True, env=batch_env,
                             cwd=tmp_path, check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["completed"] == outcome["size"] == len(list(seed_data.ids_for_day(seed, seed.start)))
    assert outcome["python"].startswith("3.12.") or not MWAA_PYTHON


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
