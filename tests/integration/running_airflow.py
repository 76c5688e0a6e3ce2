"""A real Airflow for the tests: `devstack/airflow.sh up test` (airflow standalone on port 8180),
with its own tracking database, indices and bucket, a StatsD listener and an SNS subscription for
the late-run alert. Plain helpers; the fixture that starts it lives in conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support import ROOT, build_mwaa_bundle

INSTANCE_HOME = ROOT / ".local" / "airflow-test-home"
PORT = int(os.environ.get("AIRFLOW_TEST_PORT", "8180"))
STATSD_PORT = int(os.environ.get("AIRFLOW_TEST_STATSD_PORT", "8135"))
URL = f"http://127.0.0.1:{PORT}"
TRACKING_DB = "tracking_test_airflow"
ALERT_TOPIC = "arn:aws:sns:us-east-1:123456789012:es-export-alerts"
# A user devstack/airflow.sh configures without a role: it signs in, but may read no DAG.
NO_ACCESS_USER = "noaccess"
CONFIG = {"messages_index": "af-messages", "history_index": "af-history", "status_index": "af-status",
          "audit_index": "af-audit", "bucket": "airflow-test-export", "prefix": "messages"}


class StatsdListener:
    """Collects the UDP datagrams Airflow's StatsD client sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode("utf-8", "replace").splitlines())

    def total(self, name: str) -> int:
        """The sum of a counter: lines like `airflow.es_export.messages_exported:120|c`."""
        total = 0
        for line in list(self.lines):
            metric, _, rest = line.partition(":")
            if metric == name and rest.endswith("|c"):
                total += int(float(rest.split("|")[0]))
        return total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def airflow_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "devstack" / "airflow.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=400)


def mwaa_bundle() -> Path:
    """`make mwaa-bundle`'s layout, with plugins.zip unpacked the way MWAA unpacks it."""
    bundle = build_mwaa_bundle(INSTANCE_HOME / "mwaa")
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        zf.extractall(bundle / "plugins")
    return bundle


def start_fresh(mysql_conn_json: str, *, config: dict[str, Any] | None = None,
                aws_conn_json: str | None = None) -> None:
    """A new Airflow home each session, so runs and backfills of earlier sessions do not count.

    It runs the MWAA bundle, not the repository: DAGs, packages and plugin come from the bundle
    alone, with nothing of ours on PYTHONPATH (Airflow puts the DAGs and plugins folders on the
    path itself, as MWAA does).
    """
    airflow_sh("down", "test")
    shutil.rmtree(INSTANCE_HOME, ignore_errors=True)
    INSTANCE_HOME.mkdir(parents=True)
    bundle = mwaa_bundle()
    (INSTANCE_HOME / "airflow.env").write_text(
        f"AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG='{json.dumps(config or CONFIG)}'\n"
        f"AIRFLOW_CONN_MYSQL_TRACKING='{mysql_conn_json}'\n"
        + (f"AIRFLOW_CONN_AWS_DEFAULT='{aws_conn_json}'\n" if aws_conn_json else "") +
        f"ES_EXPORT_ALERT_SNS_TOPIC_ARN={ALERT_TOPIC}\n"
        f"AIRFLOW__CORE__DAGS_FOLDER={bundle / 'dags'}\n"
        f"AIRFLOW__CORE__PLUGINS_FOLDER={bundle / 'plugins'}\n"
        "PYTHONPATH=\n"
    )
    out = airflow_sh("up", "test")
    if out.returncode != 0:
        log = ROOT / ".local" / "logs" / "airflow-test.log"
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise RuntimeError(f"airflow.sh up test failed:\n{out.stdout}\n{out.stderr}\n--- log tail ---\n{tail}")


@dataclass
class AirflowAPI:
    """The REST API (v2) of the running Airflow, signed in as admin (or as NO_ACCESS_USER)."""

    url: str = URL
    session: requests.Session = field(default_factory=requests.Session)

    def login(self, username: str = "admin") -> AirflowAPI:
        password = (INSTANCE_HOME / f"{username}_password").read_text().strip()
        resp = requests.post(f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=30)
        resp.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        return self

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        # 503 is Airflow's answer when its SQLite metadata database was locked by another component
        # (the transaction was rolled back): its docs say to try again, as a client of the API would.
        for attempt in range(6):
            resp = self.session.request(method, f"{self.url}{path}", timeout=60, **kwargs)
            if resp.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        if resp.status_code >= 400:
            raise AssertionError(f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> str:
        body = {"conf": conf, "logical_date": logical_date}
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}/taskInstances"
        return self.call("GET", path, params={"limit": 500})["task_instances"]

    def wait_for_runs(self, dag_id: str, run_ids: list[str], timeout: float = 600) -> dict[str, str]:
        """Until every run has finished; returns run_id -> state."""
        deadline = time.monotonic() + timeout
        while True:
            states = {r: self.run(dag_id, r)["state"] for r in run_ids}
            if all(s in ("success", "failed") for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"runs of {dag_id} did not finish within {timeout}s: {states}")
            time.sleep(3)


def task_log(dag_id: str, run_id: str, task_id: str, map_index: int = -1, attempt: int = 1) -> str:
    """A task's log file as the LocalExecutor wrote it under the instance's home."""
    base = INSTANCE_HOME / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        base = base / f"map_index={map_index}"
    path = base / f"attempt={attempt}.log"
    return path.read_text() if path.exists() else ""
