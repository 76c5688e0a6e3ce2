"""Read-only queries: counts for reconcile, failures for manifests and alerts, the status page's tables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from es_export.model import Status
from es_export.tracking._sql import Connection, rows, utc_naive


def status_counts(conn: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Tracked messages of [start, end) by status."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT status, COUNT(*) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s GROUP BY status",
            (utc_naive(start), utc_naive(end)),
        )
        return {status: int(n) for status, n in cur.fetchall()}


def completed_objects(conn: Connection, start: datetime, end: datetime) -> int:
    """How many distinct objects the completed messages of [start, end) are in (one each, or per batch)."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(DISTINCT s3_key) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s"
                    " AND status = %s", (utc_naive(start), utc_naive(end), Status.COMPLETED))
        return int(cur.fetchone()[0])


def completed_object_keys(conn: Connection, start: datetime, end: datetime, page: int = 5000) -> Iterator[str]:
    """The s3_key of every completed message of [start, end), page by page (a key once per message)."""
    last_id = 0
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT id, s3_key FROM message_tracking WHERE message_ts >= %s AND message_ts < %s"
                        " AND status = %s AND id > %s ORDER BY id LIMIT %s",
                        (utc_naive(start), utc_naive(end), Status.COMPLETED, last_id, page))
            found = cur.fetchall()
        conn.commit()
        if not found:
            return
        yield from (key for _, key in found if key)
        last_id = int(found[-1][0])


def batch_counts(conn: Connection, job_id: int) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), COALESCE(SUM(total), 0), COALESCE(SUM(completed), 0), COALESCE(SUM(failed), 0),"
            " COALESCE(SUM(status = %s), 0), COALESCE(SUM(bytes_written), 0)"
            " FROM batch_progress WHERE job_id = %s",
            (Status.COMPLETED, job_id),
        )
        batches, total, completed, failed, finished, written = (int(v) for v in cur.fetchone())
    return {"batches": batches, "total": total, "completed": completed, "failed": failed,
            "finished": finished, "bytes_written": written}


def failures(conn: Connection, job_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT message_id, attempts, last_error FROM message_tracking WHERE job_id = %s AND status IN (%s, %s)"
            " ORDER BY id LIMIT %s",
            (job_id, Status.FAILED, Status.DEAD, limit),
        )
        return [{"message_id": m, "attempts": int(a), "error": e} for m, a, e in cur.fetchall()]


def job_of_run(conn: Connection, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The job_runs row of an Airflow run, or None when the run never opened one."""
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM job_runs WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
        found = rows(cur)
    conn.commit()
    return found[0] if found else None


def dead_messages(conn: Connection, job_id: int, limit: int = 100) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT message_id, attempts, last_error FROM message_tracking WHERE job_id = %s AND status = %s"
                    " ORDER BY id LIMIT %s", (job_id, Status.DEAD, limit))
        return [{"message_id": m, "attempts": int(a), "error": e} for m, a, e in cur.fetchall()]


def recent_jobs(conn: Connection, limit: int = 25, dag_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The latest job_runs rows with their batch progress, newest first; with `dag_ids`, only theirs."""
    ids = None if dag_ids is None else sorted(set(dag_ids))
    if ids == []:  # no DAG, no row (and `IN ()` is not SQL)
        return []
    where = "" if ids is None else " WHERE j.dag_id IN (" + ", ".join(["%s"] * len(ids)) + ")"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT j.id, j.dag_id, j.run_id, j.interval_start, j.interval_end, j.status, j.airflow_state,"
            " j.airflow_try, j.airflow_url, j.dispatch, j.reprocess, j.ids_found, j.to_export, j.completed,"
            " j.exported_by_others,"
            " j.failed, j.objects, j.last_error, j.started_at, j.finished_at,"
            " COUNT(b.id) AS batches, COALESCE(SUM(b.status = %s), 0) AS batches_done,"
            " COALESCE(SUM(b.completed), 0) AS batch_completed, COALESCE(SUM(b.failed), 0) AS batch_failed,"
            " COALESCE(SUM(b.total), 0) AS batch_total, COALESCE(SUM(b.bytes_written), 0) AS bytes_written"
            " FROM job_runs j LEFT JOIN batch_progress b ON b.job_id = j.id"
            + where + " GROUP BY j.id ORDER BY j.id DESC LIMIT %s",
            [Status.COMPLETED, *(ids or []), limit],
        )
        found = rows(cur)
    conn.commit()
    return found


def job_batches(conn: Connection, job_id: int, limit: int = 1000,
                dag_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The batches of one job, in order; none if `dag_ids` is given and the job's DAG is not in it."""
    ids = None if dag_ids is None else sorted(set(dag_ids))
    if ids == []:
        return []
    where = "" if ids is None else (" AND job_id IN (SELECT id FROM job_runs WHERE dag_id IN ("
                                    + ", ".join(["%s"] * len(ids)) + "))")
    with conn.cursor() as cur:
        cur.execute("SELECT id, batch_no, status, total, completed, failed, attempts, bytes_written, last_error,"
                    " started_at, finished_at FROM batch_progress WHERE job_id = %s" + where
                    + " ORDER BY batch_no LIMIT %s",
                    [job_id, *(ids or []), limit])
        found = rows(cur)
    conn.commit()
    return found


def problem_messages(conn: Connection, limit: int = 100, job_id: int | None = None,
                     dag_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Failed and dead messages with their reasons, most recently changed first; with `dag_ids`, only
    those of these DAGs' jobs (message_tracking.dag_id is set with job_id)."""
    ids = None if dag_ids is None else sorted(set(dag_ids))
    if ids == []:
        return []
    args: list[Any]
    where, args = "status IN (%s, %s)", [Status.FAILED.value, Status.DEAD.value]
    if job_id is not None:
        where, args = where + " AND job_id = %s", args + [job_id]
    if ids is not None:
        where, args = where + " AND dag_id IN (" + ", ".join(["%s"] * len(ids)) + ")", args + ids
    with conn.cursor() as cur:
        cur.execute(f"SELECT message_id, status, attempts, job_id, batch_id, last_error, next_attempt_at, updated_at"
                    f" FROM message_tracking WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT %s",
                    args + [limit])
        found = rows(cur)
    conn.commit()
    return found
