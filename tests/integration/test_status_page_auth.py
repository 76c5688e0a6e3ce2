"""The status page shows a job only to users who may read its DAG, as Airflow's auth manager decides.

The running Airflow (SimpleAuthManager) has two users: admin, and NO_ACCESS_USER, configured without a
role. Every SimpleAuthManager role (viewer, user, op, admin) may read every DAG, so a role-less user is
the one user this auth manager lets sign in yet refuses every DAG, as a FAB or Keycloak user without
DAG permissions would be.

The jobs are job_runs rows written here directly: the page only reads the tables, and rows far in the
future keep the runs other tests start and count apart from these.
"""

from __future__ import annotations

import pytest

import running_airflow as ra
from es_export import tracking
from support import connect, new_tracking_database

pytestmark = pytest.mark.integration

EXPORT, RETRY = "es_message_export", "es_message_retry"
VIEWS_DB = "tracking_test_status_page"


def add_job(conn, dag_id: str, run_id: str, day: int) -> int:
    """A finished job_runs row with one failed batch and one failed message, as a run leaves them."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status)"
                    " VALUES (%s, %s, %s, %s, %s, 'failed')",
                    (dag_id, run_id, f"2031-01-{day:02d}", f"2031-01-{day + 1:02d}", f"2031-01-{day + 1:02d}"))
        job_id = cur.lastrowid
        cur.execute("INSERT INTO batch_progress (job_id, batch_no, status, total, failed)"
                    " VALUES (%s, 1, 'failed', 1, 1)", (job_id,))
        cur.execute("INSERT INTO message_tracking (message_id, message_ts, job_id, batch_id, status, last_error,"
                    " dag_id, run_id) VALUES (%s, %s, %s, %s, 'dead', 'probe', %s, %s)",
                    (f"{run_id}-msg", f"2031-01-{day:02d}", job_id, cur.lastrowid, dag_id, run_id))
    conn.commit()
    return int(job_id)


@pytest.fixture(scope="module")
def jobs(running_airflow):
    """One job of each DAG in the running Airflow's tracking database: dag_id -> (job id, run_id)."""
    conn = connect(ra.TRACKING_DB)
    try:
        made = {}
        for day, dag_id in enumerate((EXPORT, RETRY), start=20):
            run_id = f"auth_probe__{dag_id}"
            with conn.cursor() as cur:  # a rerun of this module in the same Airflow session
                cur.execute("SELECT id FROM job_runs WHERE run_id = %s", (run_id,))
                row = cur.fetchone()
            made[dag_id] = (int(row[0]) if row else add_job(conn, dag_id, run_id, day), run_id)
        return made
    finally:
        conn.close()


@pytest.fixture(scope="module")
def no_access(running_airflow):
    return ra.AirflowAPI().login(ra.NO_ACCESS_USER)


def test_the_user_without_a_role_may_sign_in_but_read_no_dag(no_access):
    """The premise, from Airflow itself: signed in (its token works), refused the DAG."""
    resp = no_access.session.get(f"{ra.URL}/api/v2/dags/{EXPORT}", timeout=30)
    assert resp.status_code == 403, resp.text  # not 401: the token is valid, the DAG is refused


def test_admin_sees_the_jobs_of_every_dag(running_airflow, jobs):
    data = running_airflow.api.call("GET", "/es-export/jobs.json", params={"limit": 500})
    assert {j["run_id"] for j in data["jobs"]} >= {run_id for _, run_id in jobs.values()}
    assert {f"{run_id}-msg" for _, run_id in jobs.values()} <= {m["message_id"] for m in data["problems"]}
    job_id, run_id = jobs[RETRY]
    page = running_airflow.api.session.get(f"{ra.URL}/es-export/", params={"job_id": job_id}, timeout=30)
    assert page.status_code == 200 and run_id in page.text and f"Batches of job {job_id}" in page.text


@pytest.mark.parametrize("path, params", [
    pytest.param("/es-export/jobs.json", {}, id="json"),
    pytest.param("/es-export/", {}, id="page"),
    pytest.param("/es-export/", {"job_id": "job"}, id="one-job"),
    pytest.param("/es-export/jobs.json", {"job_id": "job"}, id="one-job-json"),
])
def test_a_user_who_may_read_no_dag_sees_no_job(no_access, jobs, path, params):
    params = {k: jobs[EXPORT][0] if v == "job" else v for k, v in params.items()}
    resp = no_access.session.get(f"{ra.URL}{path}", params=params, timeout=30)
    assert resp.status_code == 403, resp.text[:500]
    assert "may read none of the export DAGs" in resp.text
    assert not any(run_id in resp.text for _, run_id in jobs.values())
    assert "auth_probe" not in resp.text


@pytest.fixture(scope="module")
def views_db(mysql):
    """A tracking database of its own with one job of each DAG (the running Airflow's is shared)."""
    conn = new_tracking_database(VIEWS_DB)
    ids = {dag_id: add_job(conn, dag_id, f"views__{dag_id}", day) for day, dag_id in enumerate((EXPORT, RETRY), 1)}
    yield conn, ids
    conn.close()


@pytest.mark.parametrize("dag_ids, visible", [
    pytest.param(None, {EXPORT, RETRY}, id="no-filter"),
    pytest.param({EXPORT}, {EXPORT}, id="one-dag"),
    pytest.param({EXPORT, RETRY, "other"}, {EXPORT, RETRY}, id="both"),
    pytest.param(set(), set(), id="none"),
])
def test_tracking_views_keep_to_the_dag_ids_given(views_db, dag_ids, visible):
    conn, ids = views_db
    assert {j["dag_id"] for j in tracking.recent_jobs(conn, 25, dag_ids=dag_ids)} == visible
    assert {m["job_id"] for m in tracking.problem_messages(conn, 100, dag_ids=dag_ids)} == {ids[d] for d in visible}
    for dag_id, job_id in ids.items():
        batches = tracking.job_batches(conn, job_id, dag_ids=dag_ids)
        assert len(batches) == (1 if dag_id in visible else 0), dag_id
        problems = tracking.problem_messages(conn, 100, job_id=job_id, dag_ids=dag_ids)
        assert len(problems) == (1 if dag_id in visible else 0), dag_id
