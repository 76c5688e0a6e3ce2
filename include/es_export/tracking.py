"""MySQL tracking: schema migrations and every statement on job_runs, message_tracking, batch_progress.

Works with any DB-API connection that uses the `%s` paramstyle (mysqlclient in Airflow, PyMySQL in
Lambda). Every statement is parameterised; table and column names are constants of this module.
Times are stored as naive UTC DATETIME(6).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from es_export.errors import TrackingError

# Message statuses: pending -> completed | failed -> (retry) ... -> dead after the last attempt.
PENDING, RUNNING, COMPLETED, FAILED, DEAD = "pending", "running", "completed", "failed", "dead"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "job_runs, message_tracking, batch_progress", [
        """CREATE TABLE IF NOT EXISTS job_runs (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            dag_id VARCHAR(250) NOT NULL,
            run_id VARCHAR(250) NOT NULL,
            interval_start DATETIME(6) NOT NULL,
            interval_end DATETIME(6) NOT NULL,
            next_run_date DATETIME(6) NOT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            dispatch VARCHAR(16) NOT NULL DEFAULT 'local',
            batch_size INT NOT NULL DEFAULT 500,
            reprocess BOOLEAN NOT NULL DEFAULT FALSE,
            es_count BIGINT NULL,
            ids_found BIGINT NULL,
            ids_new BIGINT NULL,
            batches INT NULL,
            to_export BIGINT NULL,
            completed BIGINT NULL,
            failed BIGINT NULL,
            objects BIGINT NULL,
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            started_at DATETIME(6) NULL,
            finished_at DATETIME(6) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_job_runs_run (dag_id, run_id),
            KEY ix_job_runs_interval (interval_start, interval_end)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS message_tracking (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            message_id VARCHAR(512) NOT NULL,
            message_ts DATETIME(6) NOT NULL,
            job_id BIGINT NULL,
            batch_id BIGINT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            s3_key VARCHAR(1024) NULL,
            exported_at DATETIME(6) NULL,
            next_attempt_at DATETIME(6) NULL,
            dag_id VARCHAR(250) NULL,
            run_id VARCHAR(250) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_message_tracking_message_id (message_id),
            KEY ix_message_tracking_ts (message_ts, status),
            KEY ix_message_tracking_job (job_id, id),
            KEY ix_message_tracking_batch (batch_id, status),
            KEY ix_message_tracking_retry (status, next_attempt_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS batch_progress (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            job_id BIGINT NOT NULL,
            batch_no INT NOT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            total INT NOT NULL DEFAULT 0,
            completed INT NOT NULL DEFAULT 0,
            failed INT NOT NULL DEFAULT 0,
            bytes_written BIGINT NOT NULL DEFAULT 0,
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            started_at DATETIME(6) NULL,
            finished_at DATETIME(6) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_batch_progress_job_batch (job_id, batch_no),
            KEY ix_batch_progress_status (job_id, status)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]),
    (2, "leases, retry schedule, extract checkpoints", [
        "ALTER TABLE message_tracking ADD COLUMN lease_expires_at DATETIME(6) NULL AFTER next_attempt_at",
        """CREATE TABLE IF NOT EXISTS extract_checkpoints (
            job_id BIGINT PRIMARY KEY,
            last_ts_ms BIGINT NOT NULL,
            ids_before BIGINT NOT NULL,
            ids_new BIGINT NOT NULL DEFAULT 0,
            finished BOOLEAN NOT NULL DEFAULT FALSE,
            resumes INT NOT NULL DEFAULT 0,
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]),
    (3, "batches dispatched to SQS", [
        "ALTER TABLE batch_progress ADD COLUMN dispatched_at DATETIME(6) NULL AFTER attempts",
    ]),
    (4, "job_runs mirrors its Airflow run", [
        "ALTER TABLE job_runs ADD COLUMN airflow_state VARCHAR(16) NULL AFTER status",
        "ALTER TABLE job_runs ADD COLUMN airflow_try INT NULL AFTER airflow_state",
        "ALTER TABLE job_runs ADD COLUMN airflow_started_at DATETIME(6) NULL AFTER airflow_try",
        "ALTER TABLE job_runs ADD COLUMN airflow_ended_at DATETIME(6) NULL AFTER airflow_started_at",
        "ALTER TABLE job_runs ADD COLUMN airflow_url VARCHAR(1024) NULL AFTER airflow_ended_at",
    ]),
]

# MySQL error codes that mean another process applied the same statement first.
_ALREADY_APPLIED = {1050, 1060, 1061}  # table exists, duplicate column, duplicate key


def utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _values(rows: int, width: int) -> str:
    one = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([one] * rows)


# ---------------------------------------------------------------------------- migrations

def migrate(conn: Any) -> list[int]:
    """Apply the migrations this database lacks, in order; returns the versions applied now."""
    applied_now = []
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INT PRIMARY KEY, description VARCHAR(250) NOT NULL,"
            " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.execute("SELECT version FROM schema_version")
        done = {row[0] for row in cur.fetchall()}
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                try:
                    cur.execute(statement)
                except Exception as exc:
                    if not exc.args or exc.args[0] not in _ALREADY_APPLIED:
                        raise
            # INSERT IGNORE: two workers migrating at once both succeed.
            cur.execute("INSERT IGNORE INTO schema_version (version, description) VALUES (%s, %s)",
                        (version, description))
            applied_now.append(version)
    conn.commit()
    return applied_now


def schema_version(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(cur.fetchone()[0])


# ---------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    job_id: int
    dag_id: str
    run_id: str
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "dag_id": self.dag_id, "run_id": self.run_id,
                "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(int(d["job_id"]), d["dag_id"], d["run_id"], datetime.fromisoformat(d["start"]),
                   datetime.fromisoformat(d["end"]))


def start_job(conn: Any, *, dag_id: str, run_id: str, start: datetime, end: datetime,
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
            (dag_id, run_id, utc_naive(start), utc_naive(end), utc_naive(end), RUNNING,
             dispatch, batch_size, reprocess),
        )
        job_id = int(cur.lastrowid)
    conn.commit()
    return Job(job_id, dag_id, run_id, start, end)


@dataclass(frozen=True)
class AirflowRun:
    """What job_runs mirrors of an Airflow DAG run."""

    dag_id: str
    run_id: str
    state: str
    try_number: int
    start: datetime | None
    end: datetime | None
    url: str
    interval_start: datetime
    interval_end: datetime
    note: str = ""


def mirror_airflow_run(conn: Any, run: AirflowRun) -> None:
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
             utc_naive(run.interval_end), PENDING, run.state, run.try_number, started, ended, run.url[:1024]),
        )
        if run.state == FAILED:
            cur.execute(
                "UPDATE job_runs SET status = %s, last_error = COALESCE(last_error, %s),"
                " finished_at = COALESCE(finished_at, UTC_TIMESTAMP(6))"
                " WHERE dag_id = %s AND run_id = %s AND status IN (%s, %s)",
                (FAILED, f"Airflow run failed: {run.note}"[:4000] if run.note else "Airflow run failed",
                 run.dag_id, run.run_id, PENDING, RUNNING),
            )
    conn.commit()


def update_job(conn: Any, job_id: int, **fields: Any) -> None:
    allowed = {"status", "es_count", "ids_found", "ids_new", "batches", "to_export", "completed", "failed",
               "objects", "last_error", "finished_at"}
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


def get_job(conn: Any, job_id: int) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM job_runs WHERE id = %s", (job_id,))
        row = cur.fetchone()
        if row is None:
            raise TrackingError(f"job {job_id} does not exist in job_runs")
        return dict(zip([d[0] for d in cur.description], row, strict=True))


# ---------------------------------------------------------------------------- extract

# ---------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Batch:
    """What travels through XCom: a descriptor, never the ids."""

    job_id: int
    batch_id: int
    batch_no: int
    size: int

    def as_dict(self) -> dict[str, int]:
        return {"job_id": self.job_id, "batch_id": self.batch_id, "batch_no": self.batch_no, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Batch:
        return cls(int(d["job_id"]), int(d["batch_id"]), int(d["batch_no"]), int(d["size"]))


def claim_for_job(conn: Any, job: Job, *, reprocess: bool) -> int:
    """Give this job the interval's messages that still need exporting; returns how many.

    A message another worker is exporting right now (running, lease not expired) is never taken;
    the lease of a worker that died expires and the message can be taken again.
    """
    statuses = [PENDING, FAILED, COMPLETED] if reprocess else [PENDING, FAILED]
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE message_tracking SET job_id = %s, batch_id = NULL, status = %s, dag_id = %s, run_id = %s,"
            " lease_expires_at = NULL WHERE message_ts >= %s AND message_ts < %s AND (status IN ("
            + ", ".join(["%s"] * len(statuses)) + ") OR (status = %s AND lease_expires_at < UTC_TIMESTAMP(6)))",
            [job.job_id, PENDING, job.dag_id, job.run_id, utc_naive(job.start), utc_naive(job.end), *statuses,
             RUNNING],
        )
        claimed = int(cur.rowcount)
        # A retried plan replaces the batches of its earlier attempt.
        cur.execute("DELETE FROM batch_progress WHERE job_id = %s", (job.job_id,))
    conn.commit()
    return claimed


def effective_batch_size(total: int, batch_size: int, max_batches: int) -> int:
    """`batch_size`, raised just enough that `total` messages fit in at most `max_batches` batches."""
    needed = -(-total // max_batches) if total else 0
    return max(batch_size, needed)


def plan_batches(conn: Any, job: Job, *, batch_size: int) -> list[Batch]:
    """Cut the job's messages into batches of `batch_size` by keyset over the primary key."""
    batches = []
    last_id = 0
    with conn.cursor() as cur:
        while True:
            cur.execute(
                "SELECT MAX(id), COUNT(*) FROM (SELECT id FROM message_tracking"
                " WHERE job_id = %s AND id > %s ORDER BY id LIMIT %s) AS page",
                (job.job_id, last_id, batch_size),
            )
            high, count = cur.fetchone()
            if not count:
                break
            batch_no = len(batches)
            cur.execute(
                "INSERT INTO batch_progress (job_id, batch_no, status, total) VALUES (%s, %s, %s, %s)",
                (job.job_id, batch_no, PENDING, count),
            )
            batch_id = int(cur.lastrowid)
            cur.execute(
                "UPDATE message_tracking SET batch_id = %s WHERE job_id = %s AND id > %s AND id <= %s",
                (batch_id, job.job_id, last_id, high),
            )
            batches.append(Batch(job.job_id, batch_id, batch_no, int(count)))
            last_id = high
            conn.commit()
    conn.commit()
    return batches


# ---------------------------------------------------------------------------- process

@dataclass(frozen=True)
class TrackedMessage:
    row_id: int
    message_id: str
    message_ts: datetime


@dataclass(frozen=True)
class Outcome:
    row_id: int
    message_id: str
    ok: bool
    s3_key: str | None = None
    error: str | None = None


def start_batch(conn: Any, batch_id: int, *, lease_seconds: int = 7200) -> list[TrackedMessage]:
    """Mark the batch and its unfinished messages running under a lease; return those messages.

    A retry of the same batch takes its running messages back at once (Airflow never runs one task
    instance twice at a time); other jobs must wait until the lease expires.
    """
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE batch_progress SET status = %s, attempts = attempts + 1, started_at = UTC_TIMESTAMP(6),"
            " finished_at = NULL, last_error = NULL WHERE id = %s",
            (RUNNING, batch_id),
        )
        if cur.rowcount == 0:
            raise TrackingError(f"batch {batch_id} does not exist in batch_progress; was the plan replaced?")
        cur.execute(
            "UPDATE message_tracking SET status = %s, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND"
            " WHERE batch_id = %s AND status IN (%s, %s, %s)",
            (RUNNING, lease_seconds, batch_id, PENDING, FAILED, RUNNING),
        )
        cur.execute(
            "SELECT id, message_id, message_ts FROM message_tracking WHERE batch_id = %s AND status = %s ORDER BY id",
            (batch_id, RUNNING),
        )
        rows = [TrackedMessage(int(r[0]), r[1], r[2].replace(tzinfo=UTC)) for r in cur.fetchall()]
    conn.commit()
    return rows


@dataclass(frozen=True)
class RetryPolicy:
    """After a failure a message waits base * 2^(attempts-1) seconds (capped); after max_attempts it is dead."""

    max_attempts: int = 5
    base_seconds: int = 60
    max_seconds: int = 3600


def record_outcomes(conn: Any, outcomes: Iterable[Outcome], *, policy: RetryPolicy = RetryPolicy(),
                    chunk_size: int = 1000) -> None:
    """Write each message's outcome; one multi-row upsert on the primary key per chunk.

    MySQL evaluates the assignments left to right: `status` still sees the old `attempts`, and
    `next_attempt_at` sees the new `attempts` and `status`.
    """
    with conn.cursor() as cur:
        for chunk in chunks(outcomes, chunk_size):
            params: list[Any] = []
            for o in chunk:
                params += [o.row_id, o.message_id, COMPLETED if o.ok else FAILED, o.s3_key,
                           None if o.ok else (o.error or "unknown error")[:4000]]
            params += [policy.max_attempts, policy.base_seconds, policy.max_seconds]
            cur.execute(
                "INSERT INTO message_tracking (id, message_id, status, s3_key, last_error, message_ts) VALUES "
                + _values(len(chunk), 5).replace("%s)", "%s, UTC_TIMESTAMP(6))")
                + " ON DUPLICATE KEY UPDATE"
                " status = IF(VALUES(status) = 'failed' AND attempts + 1 >= %s, 'dead', VALUES(status)),"
                " attempts = attempts + 1,"
                " s3_key = COALESCE(VALUES(s3_key), s3_key),"
                " last_error = VALUES(last_error),"
                " lease_expires_at = NULL,"
                " next_attempt_at = IF(status = 'failed',"
                " UTC_TIMESTAMP(6) + INTERVAL LEAST(%s * POW(2, attempts - 1), %s) SECOND, NULL),"
                " exported_at = IF(status = 'completed', UTC_TIMESTAMP(6), exported_at)",
                params,
            )
    conn.commit()


def finish_batch(conn: Any, batch_id: int, *, bytes_written: int = 0) -> dict[str, int]:
    """Close the batch with its counts, read back from message_tracking so they are always true."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(SUM(status = %s), 0), COALESCE(SUM(status IN (%s, %s)), 0), COUNT(*)"
            " FROM message_tracking WHERE batch_id = %s",
            (COMPLETED, FAILED, DEAD, batch_id),
        )
        completed, failed, total = (int(v) for v in cur.fetchone())
        cur.execute(
            "UPDATE batch_progress SET status = %s, completed = %s, failed = %s, total = %s,"
            " bytes_written = bytes_written + %s, finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (COMPLETED, completed, failed, total, bytes_written, batch_id),
        )
    conn.commit()
    return {"completed": completed, "failed": failed, "total": total}


def fail_batch(conn: Any, batch_id: int, error: str) -> None:
    """The batch could not proceed: record why and release its messages' leases at once.

    The messages become `failed` without spending an attempt, so the task's retry, a later run or
    es_message_retry can take them straight away.
    """
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE batch_progress SET status = %s, last_error = %s, finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (FAILED, error[:4000], batch_id),
        )
        cur.execute(
            "UPDATE message_tracking SET status = %s, last_error = %s, lease_expires_at = NULL,"
            " next_attempt_at = UTC_TIMESTAMP(6) WHERE batch_id = %s AND status = %s",
            (FAILED, f"batch failed: {error}"[:4000], batch_id, RUNNING),
        )
    conn.commit()


def reopen_batch(conn: Any, batch_id: int) -> int:
    """A person ran a finished batch again (cleared its task): export all of it again.

    Its completed and failed messages go back to pending; dead ones stay dead (es_message_retry
    with revive_dead=true brings those back). Returns how many messages were reopened.
    """
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE message_tracking SET status = %s, next_attempt_at = NULL, lease_expires_at = NULL"
            " WHERE batch_id = %s AND status IN (%s, %s)",
            (PENDING, batch_id, COMPLETED, FAILED),
        )
        reopened = cur.rowcount
        cur.execute(
            "UPDATE batch_progress SET status = %s, completed = 0, failed = 0, dispatched_at = NULL,"
            " finished_at = NULL WHERE id = %s",
            (PENDING, batch_id),
        )
    conn.commit()
    return reopened


# ---------------------------------------------------------------------------- reconcile

def status_counts(conn: Any, start: datetime, end: datetime) -> dict[str, int]:
    """Tracked messages of [start, end) by status."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT status, COUNT(*) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s GROUP BY status",
            (utc_naive(start), utc_naive(end)),
        )
        return {status: int(n) for status, n in cur.fetchall()}


def completed_objects(conn: Any, start: datetime, end: datetime) -> int:
    """How many distinct objects the completed messages of [start, end) are in (one each, or per batch)."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(DISTINCT s3_key) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s"
                    " AND status = %s", (utc_naive(start), utc_naive(end), COMPLETED))
        return int(cur.fetchone()[0])


def batch_counts(conn: Any, job_id: int) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), COALESCE(SUM(total), 0), COALESCE(SUM(completed), 0), COALESCE(SUM(failed), 0),"
            " COALESCE(SUM(status = %s), 0), COALESCE(SUM(bytes_written), 0)"
            " FROM batch_progress WHERE job_id = %s",
            (COMPLETED, job_id),
        )
        batches, total, completed, failed, finished, written = (int(v) for v in cur.fetchone())
    return {"batches": batches, "total": total, "completed": completed, "failed": failed,
            "finished": finished, "bytes_written": written}


def failures(conn: Any, job_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT message_id, attempts, last_error FROM message_tracking WHERE job_id = %s AND status IN (%s, %s)"
            " ORDER BY id LIMIT %s",
            (job_id, FAILED, DEAD, limit),
        )
        return [{"message_id": m, "attempts": int(a), "error": e} for m, a, e in cur.fetchall()]


# ---------------------------------------------------------------------------- extract checkpoints

@dataclass(frozen=True)
class Checkpoint:
    """How far an extract got: every id with a timestamp below last_ts_ms is tracked (ids_before of them)."""

    last_ts_ms: int
    ids_before: int
    ids_new: int
    finished: bool


def load_checkpoint(conn: Any, job_id: int) -> Checkpoint | None:
    with conn.cursor() as cur:
        cur.execute("SELECT last_ts_ms, ids_before, ids_new, finished FROM extract_checkpoints WHERE job_id = %s",
                    (job_id,))
        row = cur.fetchone()
    conn.commit()
    return Checkpoint(int(row[0]), int(row[1]), int(row[2]), bool(row[3])) if row else None


def save_checkpoint(conn: Any, job_id: int, cp: Checkpoint, *, resumed: bool = False) -> None:
    """Upsert without commit: the caller commits it together with the ids it covers."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO extract_checkpoints (job_id, last_ts_ms, ids_before, ids_new, finished, resumes)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE last_ts_ms = VALUES(last_ts_ms),"
            " ids_before = VALUES(ids_before), ids_new = VALUES(ids_new), finished = VALUES(finished),"
            " resumes = resumes + VALUES(resumes)",
            (job_id, cp.last_ts_ms, cp.ids_before, cp.ids_new, cp.finished, 1 if resumed else 0),
        )


def insert_chunk(conn: Any, hits: list[Any], *, dag_id: str, run_id: str) -> int:
    """INSERT IGNORE one chunk of ids (no commit); returns how many were new."""
    params: list[Any] = []
    for hit in hits:
        params += [hit.message_id, utc_naive(hit.timestamp), dag_id, run_id]
    with conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO message_tracking (message_id, message_ts, dag_id, run_id) VALUES "
                    + _values(len(hits), 4), params)
        return int(cur.rowcount)


# ---------------------------------------------------------------------------- retry

def claim_failed(conn: Any, job: Job, *, only_job_id: int | None = None, start: datetime | None = None,
                 end: datetime | None = None, revive_dead: bool = False, limit: int = 1_000_000) -> int:
    """Give this (retry) job the failed messages whose next attempt is due; returns how many.

    Also takes messages whose worker died (lease expired). With `revive_dead`, dead messages are
    taken too and start counting attempts again.
    """
    due = ("((status = %s AND (next_attempt_at IS NULL OR next_attempt_at <= UTC_TIMESTAMP(6)))"
           " OR (status = %s AND lease_expires_at < UTC_TIMESTAMP(6))")
    params: list[Any] = [FAILED, RUNNING]
    if revive_dead:
        due += " OR status = %s"
        params.append(DEAD)
    conditions = [due + ")"]
    if only_job_id is not None:
        conditions.append("job_id = %s")
        params.append(only_job_id)
    if start is not None:
        conditions.append("message_ts >= %s")
        params.append(utc_naive(start))
    if end is not None:
        conditions.append("message_ts < %s")
        params.append(utc_naive(end))
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE message_tracking SET attempts = IF(status = %s, 0, attempts), job_id = %s, batch_id = NULL,"
            " status = %s, dag_id = %s, run_id = %s, lease_expires_at = NULL WHERE " + " AND ".join(conditions)
            + " ORDER BY id LIMIT %s",
            [DEAD, job.job_id, PENDING, job.dag_id, job.run_id, *params, limit],
        )
        claimed = int(cur.rowcount)
        cur.execute("DELETE FROM batch_progress WHERE job_id = %s", (job.job_id,))
    conn.commit()
    return claimed


def job_status_counts(conn: Any, job_id: int) -> dict[str, int]:
    """Messages currently owned by a job, by status."""
    with conn.cursor() as cur:
        cur.execute("SELECT status, COUNT(*) FROM message_tracking WHERE job_id = %s GROUP BY status", (job_id,))
        return {status: int(n) for status, n in cur.fetchall()}


def dead_messages(conn: Any, job_id: int, limit: int = 100) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT message_id, attempts, last_error FROM message_tracking WHERE job_id = %s AND status = %s"
                    " ORDER BY id LIMIT %s", (job_id, DEAD, limit))
        return [{"message_id": m, "attempts": int(a), "error": e} for m, a, e in cur.fetchall()]


# ---------------------------------------------------------------------------- status page

def _rows(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def recent_jobs(conn: Any, limit: int = 25) -> list[dict[str, Any]]:
    """The latest job_runs rows with their batch progress, newest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT j.id, j.dag_id, j.run_id, j.interval_start, j.interval_end, j.status, j.airflow_state,"
            " j.airflow_try, j.airflow_url, j.dispatch, j.reprocess, j.ids_found, j.to_export, j.completed,"
            " j.failed, j.objects, j.last_error, j.started_at, j.finished_at,"
            " COUNT(b.id) AS batches, COALESCE(SUM(b.status = %s), 0) AS batches_done,"
            " COALESCE(SUM(b.completed), 0) AS batch_completed, COALESCE(SUM(b.failed), 0) AS batch_failed,"
            " COALESCE(SUM(b.total), 0) AS batch_total, COALESCE(SUM(b.bytes_written), 0) AS bytes_written"
            " FROM job_runs j LEFT JOIN batch_progress b ON b.job_id = j.id"
            " GROUP BY j.id ORDER BY j.id DESC LIMIT %s",
            (COMPLETED, limit),
        )
        rows = _rows(cur)
    conn.commit()
    return rows


def job_batches(conn: Any, job_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """The batches of one job, in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT id, batch_no, status, total, completed, failed, attempts, bytes_written, last_error,"
                    " started_at, finished_at FROM batch_progress WHERE job_id = %s ORDER BY batch_no LIMIT %s",
                    (job_id, limit))
        rows = _rows(cur)
    conn.commit()
    return rows


def problem_messages(conn: Any, limit: int = 100, job_id: int | None = None) -> list[dict[str, Any]]:
    """Failed and dead messages with their reasons, most recently changed first."""
    where, args = "status IN (%s, %s)", [FAILED, DEAD]
    if job_id is not None:
        where, args = where + " AND job_id = %s", args + [job_id]
    with conn.cursor() as cur:
        cur.execute(f"SELECT message_id, status, attempts, job_id, batch_id, last_error, next_attempt_at, updated_at"
                    f" FROM message_tracking WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT %s",
                    args + [limit])
        rows = _rows(cur)
    conn.commit()
    return rows


# ---------------------------------------------------------------------------- dispatch (SQS)

def mark_dispatched(conn: Any, batch_ids: list[int]) -> None:
    if not batch_ids:
        return
    with conn.cursor() as cur:
        cur.execute("UPDATE batch_progress SET dispatched_at = UTC_TIMESTAMP(6) WHERE id IN ("
                    + ", ".join(["%s"] * len(batch_ids)) + ")", batch_ids)
    conn.commit()


def batch_state(conn: Any, batch_id: int) -> dict[str, Any]:
    """The batch_progress row of a batch, as a dict."""
    with conn.cursor() as cur:
        cur.execute("SELECT id AS batch_id, job_id, batch_no, status, total, completed, failed, bytes_written,"
                    " attempts, started_at, finished_at, dispatched_at, last_error FROM batch_progress"
                    " WHERE id = %s", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise TrackingError(f"batch {batch_id} does not exist in batch_progress; was the plan replaced?")
        state = dict(zip([d[0] for d in cur.description], row, strict=True))
    conn.commit()  # a fresh snapshot on the next call (REPEATABLE READ)
    return state
