"""The status page reads the tracking database as a read-only user, with the quick timeouts, and says what
is wrong (HTTP 503) when the schema is older than the code or the database does not answer."""

from __future__ import annotations

import json
import os
import time

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

import support
from es_export import tracking
from es_export_airflow import status_page

pytestmark = pytest.mark.integration

DB = "tracking_test_status_db"


def read_only_connection(database: str, port: int | None = None) -> str:
    """AIRFLOW_CONN_MYSQL_TRACKING for the stack's user that may only SELECT in the *_test databases."""
    conn = json.loads(support.mysql_connection(database))
    conn["login"] = support.require_env("STACK_MYSQL_RO_USER")
    if port is not None:
        conn["port"] = port
    return json.dumps(conn)


@pytest.fixture()
def page(monkeypatch):
    monkeypatch.setattr(status_page, "get_auth_manager", SimpleAuthManager)
    status_page.app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="u", role="viewer")
    yield TestClient(status_page.app)
    status_page.app.dependency_overrides.clear()


def test_a_read_only_user_sees_the_jobs(page, monkeypatch):
    conn = support.new_tracking_database(DB)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status)"
                    " VALUES ('es_message_export', 'ro-probe', '2031-02-01', '2031-02-02', '2031-02-02', 'completed')")
    conn.commit()
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", read_only_connection(DB))
    got = page.get("/jobs.json")
    assert got.status_code == 200, got.text
    assert [j["run_id"] for j in got.json()["jobs"]] == ["ro-probe"]
    assert page.get("/").status_code == 200


def test_a_schema_older_than_the_code_is_named_and_left_alone(page, monkeypatch):
    support.reset_database(DB)
    conn = support.connect(DB)
    monkeypatch.setattr(tracking.schema, "MIGRATIONS", [m for m in tracking.MIGRATIONS if m[0] < 9])
    tracking.migrate(conn)
    monkeypatch.undo()
    monkeypatch.setattr(status_page, "get_auth_manager", SimpleAuthManager)
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", support.mysql_connection(DB))  # a user who could migrate
    got = page.get("/jobs.json")
    assert got.status_code == 503
    assert f"at version 8, and this version of the package needs {tracking.LATEST_VERSION}" in got.json()["detail"]
    html = page.get("/")
    assert html.status_code == 503 and "python -m es_export.migrate" in html.text
    assert tracking.schema_version(conn) == 8  # the request changed nothing
    conn.close()


def test_an_empty_database_is_named_not_created(page, monkeypatch):
    support.reset_database(DB)
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", read_only_connection(DB))
    got = page.get("/jobs.json")
    assert got.status_code == 503 and "at version 0" in got.json()["detail"]


def test_a_database_that_hangs_costs_seconds(page, monkeypatch):
    with support.black_holed_port("silent") as port:
        monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", read_only_connection(DB, port=port))
        began = time.monotonic()
        got = page.get("/jobs.json")
        took = time.monotonic() - began
    assert got.status_code == 503 and "mysql_tracking" in got.json()["detail"]
    assert took < 30, took
    assert os.environ["MYSQL_PASSWORD"] not in got.text


def test_the_page_finds_the_pools_that_do_not_exist(airflow_db, monkeypatch):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("es_export_batches", 8, "the batch pool", include_deferred=False)
    assert status_page.missing_pools() == []
    monkeypatch.setenv("ES_EXPORT_EXTRACT_POOL", "es_export_scans_never_created")
    assert status_page.missing_pools() == ["es_export_scans_never_created"]
