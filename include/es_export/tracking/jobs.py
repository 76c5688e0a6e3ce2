"""job_runs: one row per Airflow run, its counts, its mirror of the Airflow run, and which jobs are live."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from es_export.errors import TrackingError
from es_export.model import AirflowRun, Job, JobShare, Status
from es_export.tracking._sql import Connection, utc_naive

# An Airflow DagRunState value, not a message status: what a failed Airflow run reports.
AIRFLOW_FAILED = "failed"


def start_job(conn: Connection, *, dag_id: str, run_id: str, start: datetime, end: datetime,
              dispatch: str, batch_size: int, reprocess: bool) -> Job:
    """The job_runs row of an Airflow run, created on first use and reused when the run is retried."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status,"
            " dispatch, batch_size, reprocess, attempts, started_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1, UTC_TIMESTAMP(6))"
            " ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), status = VALUES(status),"
            " interval_start = VALUES(interval_start), interval_end = VALUES(interval_end),"
            " next_run_date = VALUES(next_run_date), dispatch = VALUES(dispatch),"
            " batch_size = VALUES(batch_size), reprocess = VALUES(reprocess),"
            " attempts = attempts + 1, last_error = NULL, finished_at = NULL",
            (dag_id, run_id, utc_naive(start), utc_naive(end), utc_naive(end), Status.RUNNING,
             dispatch, batch_size, reprocess),
        )
        job_id = int(cur.lastrowid)
    conn.commit()
    return Job(job_id, dag_id, run_id, start, end)


def live_runs(conn: Connection, dag_id: str, *, other_than: str) -> list[str]:
    """The run ids of the DAG's live jobs (running, touched within LIVE_JOB_HOURS), but `other_than`."""
    with conn.cursor() as cur:
        cur.execute("SELECT j.run_id FROM job_runs j WHERE j.dag_id = %s AND j.run_id <> %s AND " + LIVE_JOB
                    + " ORDER BY j.id", (dag_id, other_than))
        runs = [r[0] for r in cur.fetchall()]
    conn.commit()
    return runs


def mirror_airflow_run(conn: Connection, run: AirflowRun) -> None:
    """Record an Airflow run's state on its job_runs row, creating the row if start_job has not yet.

    A run that Airflow ended as failed before `reconcile` finished it (a task failed, or a person
    marked it failed) also gets status failed, so no job stays `running` for ever.
    """
    started, ended = (utc_naive(v) if v else None for v in (run.start, run.end))
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status,"
            " airflow_state, airflow_try, airflow_started_at, airflow_ended_at, airflow_url)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON DUPLICATE KEY UPDATE airflow_state = VALUES(airflow_state), airflow_try = VALUES(airflow_try),"
            " airflow_started_at = VALUES(airflow_started_at), airflow_ended_at = VALUES(airflow_ended_at),"
            " airflow_url = VALUES(airflow_url)",
            (run.dag_id, run.run_id, utc_naive(run.interval_start), utc_naive(run.interval_end),
             utc_naive(run.interval_end), Status.PENDING, run.state, run.try_number, started, ended, run.url[:1024]),
        )
        if run.state == AIRFLOW_FAILED:
            cur.execute(
                "UPDATE job_runs SET status = %s, last_error = COALESCE(last_error, %s),"
                " finished_at = COALESCE(finished_at, UTC_TIMESTAMP(6))"
                " WHERE dag_id = %s AND run_id = %s AND status IN (%s, %s)",
                (Status.FAILED, f"Airflow run failed: {run.note}"[:4000] if run.note else "Airflow run failed",
                 run.dag_id, run.run_id, Status.PENDING, Status.RUNNING),
            )
    conn.commit()


def update_job(conn: Connection, job_id: int, **fields: Any) -> None:
    allowed = {"status", "es_count", "ids_found", "ids_new", "batches", "to_export", "completed", "failed",
               "objects", "last_error", "finished_at", "exported_by_others"}
    unknown = set(fields) - allowed
    if unknown:
        raise TrackingError(f"job_runs has no updatable column(s) {sorted(unknown)}")
    if not fields:
        return
    names = sorted(fields)
    assignments = ", ".join(f"{name} = %s" for name in names)
    with conn.cursor() as cur:
        cur.execute(f"UPDATE job_runs SET {assignments} WHERE id = %s", [fields[n] for n in names] + [job_id])
    conn.commit()


def get_job(conn: Connection, job_id: int) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM job_runs WHERE id = %s", (job_id,))
        row = cur.fetchone()
        if row is None:
            raise TrackingError(f"job {job_id} does not exist in job_runs")
        return dict(zip([d[0] for d in cur.description], row, strict=True))


# A message is held by another live job when that job claimed it (job_id) or extracted it and has
# not planned yet (job_id NULL, dag_id/run_id of the extracting run) and the job is still running.
# A job_runs row untouched for longer than the export DAG's dagrun_timeout (12 h) belongs to a run
# Airflow has ended whatever the row says (a mirror update that never arrived), so it holds nothing.
LIVE_JOB_HOURS = 12


LIVE_JOB = f"j.status = '{Status.RUNNING}' AND j.updated_at > NOW(6) - INTERVAL {LIVE_JOB_HOURS} HOUR"


# Two lookups, each by a unique key of job_runs (its id; its dag_id and run_id), rather than one
# EXISTS with an OR, for which MariaDB re-plans the lookup for every message ("range checked for
# each record"): a claim piece of 42,000 messages read half the rows and ran 1.5-2.6x faster.
# Takes the excluded job id twice.
HELD_BY_LIVE_JOB = (
    "(EXISTS (SELECT 1 FROM job_runs j WHERE j.id = message_tracking.job_id AND " + LIVE_JOB + " AND j.id <> %s)"
    " OR (message_tracking.job_id IS NULL AND EXISTS (SELECT 1 FROM job_runs j"
    " WHERE j.dag_id = message_tracking.dag_id AND j.run_id = message_tracking.run_id AND " + LIVE_JOB
    + " AND j.id <> %s)))"
)


def held_by_other_jobs(conn: Connection, job: Job) -> list[JobShare]:
    """Messages of the job's interval that other live jobs still have to export, by job."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT j.id, j.dag_id, j.run_id, COUNT(*) FROM message_tracking m JOIN job_runs j"
            " ON (j.id = m.job_id OR (m.job_id IS NULL AND j.dag_id = m.dag_id AND j.run_id = m.run_id))"
            " WHERE m.message_ts >= %s AND m.message_ts < %s AND m.status IN (%s, %s) AND " + LIVE_JOB
            + " AND j.id <> %s GROUP BY j.id, j.dag_id, j.run_id ORDER BY j.id",
            (utc_naive(job.start), utc_naive(job.end), Status.PENDING, Status.RUNNING, job.job_id),
        )
        shares = [JobShare(int(i), d, r, int(n)) for i, d, r, n in cur.fetchall()]
    conn.commit()
    return shares


def completed_by_job(conn: Connection, start: datetime, end: datetime) -> list[JobShare]:
    """The interval's completed messages by the job that exported them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT m.job_id, j.dag_id, j.run_id, COUNT(*) FROM message_tracking m LEFT JOIN job_runs j"
            " ON j.id = m.job_id WHERE m.message_ts >= %s AND m.message_ts < %s AND m.status = %s"
            " GROUP BY m.job_id, j.dag_id, j.run_id ORDER BY m.job_id",
            (utc_naive(start), utc_naive(end), Status.COMPLETED),
        )
        shares = [JobShare(None if i is None else int(i), d, r, int(n)) for i, d, r, n in cur.fetchall()]
    conn.commit()
    return shares


def job_status_counts(conn: Connection, job_id: int) -> dict[str, int]:
    """Messages currently owned by a job, by status."""
    with conn.cursor() as cur:
        cur.execute("SELECT status, COUNT(*) FROM message_tracking WHERE job_id = %s GROUP BY status", (job_id,))
        return {status: int(n) for status, n in cur.fetchall()}
