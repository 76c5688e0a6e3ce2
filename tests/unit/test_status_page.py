"""The status page's HTML: every value escaped, progress and links shown; and who may see which
jobs, as Airflow's auth manager decides (served for real in tests/integration/test_airflow_ops.py and
test_status_page_auth.py)."""

from datetime import datetime

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from es_export_airflow import status_page

pytestmark = pytest.mark.unit

JOB = {"id": 7, "dag_id": "es_message_export", "run_id": "manual__<b>", "interval_start": datetime(2024, 10, 1),
       "interval_end": datetime(2024, 10, 2), "status": "completed", "airflow_state": "success", "airflow_try": 2,
       "airflow_url": "http://af/dags/es_message_export/runs/manual__%3Cb%3E", "dispatch": "local",
       "reprocess": 0, "ids_found": 300, "to_export": 300, "completed": 299, "failed": 1, "objects": 299,
       "last_error": None, "started_at": None, "finished_at": None, "batches": 3, "batches_done": 2,
       "batch_completed": 299, "batch_failed": 1, "batch_total": 300, "bytes_written": 1234}
PROBLEM = {"message_id": "<script>alert('x')</script>", "status": "failed", "attempts": 1, "job_id": 7,
           "batch_id": 4, "last_error": "message '<x>' is no longer in index 'messages'", "next_attempt_at": None,
           "updated_at": None}


def test_values_are_escaped_and_nothing_injects_markup():
    page = status_page.render({"jobs": [JOB], "problems": [PROBLEM]}, None)
    assert "<script>" not in page and "manual__<b>" not in page
    assert "&lt;script&gt;" in page and "manual__&lt;b&gt;" in page


def test_a_job_shows_its_batch_progress_and_links_to_its_run():
    page = status_page.render({"jobs": [JOB], "problems": []}, None)
    assert "<td>2/3</td>" in page
    assert 'href="http://af/dags/es_message_export/runs/manual__%3Cb%3E"' in page
    assert 'href="?job_id=7"' in page


def test_empty_tables_say_so():
    page = status_page.render({"jobs": [], "problems": []}, 3)
    assert "no jobs yet" in page and "job 3" in page


def test_a_missing_pool_is_named_with_how_to_create_it():
    page = status_page.render({"jobs": [], "problems": [], "missing_pools": ["es_export_scans"]}, None)
    assert "The Airflow pool es_export_scans does not exist" in page
    assert "airflow pools set es_export_scans 8" in page
    assert "does not exist" not in status_page.render({"jobs": [], "problems": [], "missing_pools": []}, None)


def test_the_page_shows_how_fresh_each_day_is():
    fresh = {"watermarks": [{"dag_id": "es_message_refresh", "watermark": "2026-12-06T10:00:00+00:00", "job_id": 9}],
             "days": [{"day": "2026-12-05", "refreshed_at": "2026-12-06T10:00:03+00:00", "rewritten": 17,
                       "job_id": 9}]}
    page = status_page.render({"jobs": [], "problems": [], "freshness": fresh}, None)
    assert "es_message_refresh: up to date to 2026-12-06T10:00:00+00:00" in page
    assert "<td>2026-12-05</td><td>2026-12-06T10:00:03+00:00</td><td>17</td>" in page
    assert "no refresh has finished yet" in status_page.render({"jobs": [], "problems": []}, None)


def test_one_job_shows_its_batches():
    batch = {"id": 4, "batch_no": 1, "status": "failed", "total": 150, "completed": 149, "failed": 1, "attempts": 2,
             "bytes_written": 99, "last_error": "ConnectionError: <es down>", "started_at": None, "finished_at": None}
    page = status_page.render({"jobs": [JOB], "batches": [batch], "problems": [PROBLEM]}, 7)
    assert "Batches of job 7" in page and '<td class="s-failed">failed</td>' in page
    assert "ConnectionError: &lt;es down&gt;" in page


EXPORT, RETRY, REFRESH = "es_message_export", "es_message_retry", "es_message_refresh"


class OnlyRetryAuthManager(SimpleAuthManager):
    """Per-DAG permissions, as FAB or Keycloak grant them: this user may read es_message_retry only."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        return method == "GET" and details is not None and details.id == RETRY


@pytest.fixture
def client(monkeypatch):
    """A client of the status page signed in as a user of the given role; `.snapshots` records the
    DAG ids each request read the tracking tables with (no database here)."""
    snapshots: list[set[str]] = []

    def snapshot(limit, job_id, dag_ids):
        snapshots.append(dag_ids)
        return {"jobs": [JOB], "batches": [], "problems": [], "dag_ids": sorted(dag_ids)}

    monkeypatch.setattr(status_page, "snapshot", snapshot)

    def signed_in_as(role: str | None, auth_manager: type = SimpleAuthManager) -> TestClient:
        monkeypatch.setattr(status_page, "get_auth_manager", auth_manager)
        status_page.app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="u", role=role)
        test_client = TestClient(status_page.app)
        test_client.snapshots = snapshots
        return test_client

    yield signed_in_as
    status_page.app.dependency_overrides.clear()


@pytest.mark.parametrize("role", [pytest.param(r, id=r) for r in ("viewer", "user", "op", "admin")])
def test_every_simple_auth_manager_role_reads_every_export_dag(client, role):
    c = client(role)
    assert c.get("/jobs.json").status_code == 200 and c.get("/").status_code == 200
    assert c.snapshots == [{EXPORT, RETRY, REFRESH}, {EXPORT, RETRY, REFRESH}]


@pytest.mark.parametrize("path", [pytest.param("/", id="page"), pytest.param("/jobs.json", id="json"),
                                  pytest.param("/?job_id=7", id="one-job")])
@pytest.mark.parametrize("role", [pytest.param(None, id="no-role"), pytest.param("", id="empty-role")])
def test_a_user_who_may_read_no_dag_gets_403_and_why(client, role, path):
    c = client(role)
    resp = c.get(path)
    assert resp.status_code == 403
    assert "You may read none of the export DAGs (es_message_export, es_message_refresh, es_message_retry)" in resp.text
    assert "and their runs" in resp.text
    assert "manual__" not in resp.text and c.snapshots == []  # the tracking tables were not even read


def test_a_user_sees_the_jobs_of_the_dags_they_may_read_and_is_told_of_the_others(client):
    c = client("viewer", OnlyRetryAuthManager)
    page = c.get("/")
    assert page.status_code == 200 and c.snapshots == [{RETRY}]
    assert "Only the jobs of es_message_retry are shown" in page.text
    assert c.get("/jobs.json").json()["dag_ids"] == [RETRY]


class NoRunsAuthManager(SimpleAuthManager):
    """This user may read the DAGs but not their runs (a custom role with "DAGs" read and no "DAG Runs")."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        return method == "GET" and access_entity is None


def test_a_user_who_may_read_the_dags_but_not_their_runs_sees_no_run(client):
    c = client("viewer", NoRunsAuthManager)
    resp = c.get("/jobs.json")
    assert resp.status_code == 403 and "and their runs" in resp.text and c.snapshots == []


def test_a_user_who_may_read_every_dag_gets_no_note(client):
    assert "are shown" not in client("admin").get("/").text
