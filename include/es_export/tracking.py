"""MySQL tracking: schema migrations and every statement on job_runs, message_tracking, batch_progress.

Works with any DB-API connection that uses the `%s` paramstyle (mysqlclient in Airflow, PyMySQL in
Lambda). Every statement is parameterised; table and column names are constants of this module.
Times are stored as naive UTC DATETIME(6).
"""

from __future__ import annotations

import hashlib
import time
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
    # PAD SPACE collations (every *_bin of MySQL 5.7 and MariaDB, MySQL 8's utf8mb4_bin) treat 'pad' and
    # 'pad ' as one key; ids must compare byte by byte. {nopad_bin} is chosen per server by migrate().
    (5, "byte-exact message ids, batch leases, s3_key index", [
        "ALTER TABLE message_tracking MODIFY message_id VARCHAR(512) CHARACTER SET utf8mb4"
        " COLLATE {nopad_bin} NOT NULL",
        "ALTER TABLE batch_progress ADD COLUMN lease_expires_at DATETIME(6) NULL AFTER dispatched_at",
        "ALTER TABLE message_tracking ADD KEY ix_message_tracking_s3_key (s3_key(255))",
    ]),
    (6, "which job exported which part of an interval", [
        "ALTER TABLE job_runs ADD COLUMN exported_by_others BIGINT NULL AFTER completed",
    ]),
]

# NO PAD binary collations: MariaDB >= 10.2, MySQL >= 8.0.17.
NOPAD_BIN_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")

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
        names: dict[str, str] = {}
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                if "{nopad_bin}" in statement and "nopad_bin" not in names:
                    names["nopad_bin"] = _nopad_bin_collation(cur)
                try:
                    cur.execute(statement.format(**names) if "{" in statement else statement)
                except Exception as exc:
                    if not exc.args or exc.args[0] not in _ALREADY_APPLIED:
                        raise
            # INSERT IGNORE: two workers migrating at once both succeed.
            cur.execute("INSERT IGNORE INTO schema_version (version, description) VALUES (%s, %s)",
                        (version, description))
            applied_now.append(version)
    conn.commit()
    return applied_now


def _nopad_bin_collation(cur: Any) -> str:
    for name in NOPAD_BIN_COLLATIONS:
        cur.execute("SHOW COLLATION LIKE %s", (name,))
        if cur.fetchall():
            return name
    raise TrackingError("the tracking database has no NO PAD binary collation (utf8mb4_nopad_bin or "
                        "utf8mb4_0900_bin), so message ids differing only by trailing spaces would collide; "
                        "use MariaDB 10.2+ or MySQL 8.0.17+")


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


# A message is held by another live job when that job claimed it (job_id) or extracted it and has
# not planned yet (job_id NULL, dag_id/run_id of the extracting run) and the job is still running.
# A job_runs row untouched for longer than the export DAG's dagrun_timeout (12 h) belongs to a run
# Airflow has ended whatever the row says (a mirror update that never arrived), so it holds nothing.
LIVE_JOB_HOURS = 12
_LIVE_JOB = f"j.status = 'running' AND j.updated_at > NOW(6) - INTERVAL {LIVE_JOB_HOURS} HOUR"
_HELD_BY_LIVE_JOB = (
    "EXISTS (SELECT 1 FROM job_runs j WHERE " + _LIVE_JOB + " AND j.id <> %s"
    " AND (j.id = message_tracking.job_id OR (message_tracking.job_id IS NULL"
    " AND j.dag_id = message_tracking.dag_id AND j.run_id = message_tracking.run_id)))"
)


def claim_for_job(conn: Any, job: Job, *, reprocess: bool) -> int:
    """Give this job the interval's messages that still need exporting; returns how many.

    Never taken: a message another live job holds (claimed, or extracted and not yet planned: that
    job exports it, and this job's reconcile waits for it), and one another worker is exporting
    (running, lease not expired). Taken: failed ones, pending ones nobody live holds, running ones
    whose lease expired or that this job's own earlier attempt left behind, and with `reprocess`
    completed ones. The job's unfinished batches of an earlier attempt are replaced; its completed
    batches stay, so a rerun batches only what is left to do.
    """
    taken = [PENDING, FAILED, COMPLETED] if reprocess else [PENDING, FAILED]
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE message_tracking SET job_id = %s, batch_id = NULL, status = %s, dag_id = %s, run_id = %s,"
            " lease_expires_at = NULL WHERE message_ts >= %s AND message_ts < %s AND ((status IN ("
            + ", ".join(["%s"] * len(taken)) + ") AND NOT " + _HELD_BY_LIVE_JOB + ")"
            " OR (status = %s AND (lease_expires_at < UTC_TIMESTAMP(6) OR job_id = %s)))",
            [job.job_id, PENDING, job.dag_id, job.run_id, utc_naive(job.start), utc_naive(job.end), *taken,
             job.job_id, RUNNING, job.job_id],
        )
        claimed = int(cur.rowcount)
        _drop_unfinished_batches(cur, job.job_id)
    conn.commit()
    return claimed


def _drop_unfinished_batches(cur: Any, job_id: int) -> None:
    # Deleting the row also fences any attempt of those batches still running somewhere.
    cur.execute("DELETE FROM batch_progress WHERE job_id = %s AND status <> %s", (job_id, COMPLETED))


def effective_batch_size(total: int, batch_size: int, max_batches: int) -> int:
    """`batch_size`, raised just enough that `total` messages fit in at most `max_batches` batches."""
    needed = -(-total // max_batches) if total else 0
    return max(batch_size, needed)


def plan_batches(conn: Any, job: Job, *, batch_size: int) -> list[Batch]:
    """Cut the job's claimed, unbatched messages into batches of `batch_size` (keyset over the id).

    Only what the claim just took is cut, so the number of batches is at most
    ceil(claimed / batch_size) whatever earlier attempts of the job did. Numbers continue after the
    job's completed batches, so no two batches of a job ever share a number.
    """
    batches = []
    last_id = 0
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(MAX(batch_no) + 1, 0) FROM batch_progress WHERE job_id = %s", (job.job_id,))
        next_no = int(cur.fetchone()[0])
        while True:
            cur.execute(
                "SELECT MAX(id) FROM (SELECT id FROM message_tracking WHERE job_id = %s AND batch_id IS NULL"
                " AND status = %s AND id > %s ORDER BY id LIMIT %s) AS page",
                (job.job_id, PENDING, last_id, batch_size),
            )
            high = cur.fetchone()[0]
            if high is None:
                break
            cur.execute("INSERT INTO batch_progress (job_id, batch_no, status, total) VALUES (%s, %s, %s, 0)",
                        (job.job_id, next_no, PENDING))
            batch_id = int(cur.lastrowid)
            cur.execute(
                "UPDATE message_tracking SET batch_id = %s WHERE job_id = %s AND batch_id IS NULL AND status = %s"
                " AND id > %s AND id <= %s",
                (batch_id, job.job_id, PENDING, last_id, high),
            )
            size = int(cur.rowcount)
            cur.execute("UPDATE batch_progress SET total = %s WHERE id = %s", (size, batch_id))
            batches.append(Batch(job.job_id, batch_id, next_no, size))
            next_no += 1
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
    s3_key: str | None = None  # where an earlier export put it, if any


@dataclass(frozen=True)
class Outcome:
    row_id: int
    message_id: str
    ok: bool
    s3_key: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class BatchAttempt:
    """One attempt at a batch. `token` fences it: every write checks it is still the batch's latest."""

    batch_id: int
    token: int
    messages: list[TrackedMessage]
    already_completed: bool = False


class StaleAttempt(TrackingError):
    """A newer attempt took the batch over (or the plan replaced it); this attempt's writes are refused."""


# Lock wait timeout and deadlock: the statement can simply be run again.
_LOCK_ERRORS = {1205, 1213}


def _locking_retries(conn: Any, work: Any, *, attempts: int = 6) -> Any:
    """Run `work(cursor)` in a transaction and commit, again from the start on a deadlock or lock timeout."""
    for attempt in range(attempts):
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
            return result
        except Exception as exc:
            code = exc.args[0] if exc.args else None
            if code not in _LOCK_ERRORS or attempt == attempts - 1:
                raise
            conn.rollback()
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
    raise AssertionError("unreachable")


def _fence(cur: Any, batch_id: int, token: int) -> None:
    """Lock the batch row; refuse unless `token` is still its running attempt."""
    cur.execute("SELECT attempts, status FROM batch_progress WHERE id = %s FOR UPDATE", (batch_id,))
    row = cur.fetchone()
    if row is None:
        raise StaleAttempt(f"batch {batch_id} no longer exists (a rerun replaced the plan); attempt {token}'s "
                           "results are discarded, the rerun exports these messages")
    if int(row[0]) != token or row[1] != RUNNING:
        raise StaleAttempt(f"batch {batch_id} is now at attempt {row[0]} ({row[1]}); attempt {token}'s results "
                           "are discarded so no message is counted twice")


def start_batch(conn: Any, batch_id: int, *, lease_seconds: int = 7200) -> BatchAttempt:
    """Start a new attempt: the batch and its unfinished messages become running under a lease.

    The new attempt takes the batch's running messages back at once (the earlier attempt died or
    is fenced out by the new token); other jobs must wait until the lease expires. A batch that is
    already completed (a queue delivering twice) is left as it is.
    """
    def work(cur: Any) -> BatchAttempt:
        cur.execute("SELECT attempts, status FROM batch_progress WHERE id = %s FOR UPDATE", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise StaleAttempt(f"batch {batch_id} does not exist in batch_progress; was the plan replaced?")
        if row[1] == COMPLETED:
            return BatchAttempt(batch_id, int(row[0]), [], already_completed=True)
        token = int(row[0]) + 1
        cur.execute(
            "UPDATE batch_progress SET status = %s, attempts = %s, started_at = UTC_TIMESTAMP(6), finished_at = NULL,"
            " last_error = NULL, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE id = %s",
            (RUNNING, token, lease_seconds, batch_id),
        )
        cur.execute(
            "UPDATE message_tracking SET status = %s, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND"
            " WHERE batch_id = %s AND status IN (%s, %s, %s)",
            (RUNNING, lease_seconds, batch_id, PENDING, FAILED, RUNNING),
        )
        cur.execute("SELECT id, message_id, message_ts, s3_key FROM message_tracking WHERE batch_id = %s"
                    " AND status = %s ORDER BY id", (batch_id, RUNNING))
        messages = [TrackedMessage(int(r[0]), r[1], r[2].replace(tzinfo=UTC), r[3]) for r in cur.fetchall()]
        return BatchAttempt(batch_id, token, messages)

    return _locking_retries(conn, work)


@dataclass(frozen=True)
class RetryPolicy:
    """After a failure a message waits base * 2^(attempts-1) seconds (capped); after max_attempts it is dead."""

    max_attempts: int = 5
    base_seconds: int = 60
    max_seconds: int = 3600


# Assignments run left to right: `attempts` is already the new count when status and the next
# attempt's time are computed.
_FAIL_ASSIGNMENTS = (
    "attempts = attempts + 1, status = IF(attempts >= %s, 'dead', 'failed'), lease_expires_at = NULL,"
    " next_attempt_at = IF(status = 'failed',"
    " UTC_TIMESTAMP(6) + INTERVAL LEAST(%s * POW(2, attempts - 1), %s) SECOND, NULL)"
)


def _fail_params(policy: RetryPolicy) -> list[Any]:
    return [policy.max_attempts, policy.base_seconds, policy.max_seconds]


def record_outcomes(conn: Any, attempt: BatchAttempt, outcomes: Iterable[Outcome], *,
                    policy: RetryPolicy = RetryPolicy(), chunk_size: int = 1000) -> int:
    """Write each message's outcome, fenced by the attempt's token; returns how many rows changed.

    Only messages still running in this batch are written, so a message another job took over
    meanwhile keeps that job's state. Each chunk is one transaction, run again on a deadlock.
    """
    changed = 0
    for chunk in chunks(outcomes, chunk_size):
        done = [o for o in chunk if o.ok]
        failed = [o for o in chunk if not o.ok]

        def work(cur: Any, done: list[Outcome] = done, failed: list[Outcome] = failed) -> int:
            _fence(cur, attempt.batch_id, attempt.token)
            n = 0
            if done:
                cur.execute(
                    "UPDATE message_tracking SET status = %s, attempts = attempts + 1, s3_key = CASE id "
                    + " ".join(["WHEN %s THEN %s"] * len(done)) + " END, last_error = NULL,"
                    " lease_expires_at = NULL, next_attempt_at = NULL, exported_at = UTC_TIMESTAMP(6)"
                    " WHERE batch_id = %s AND status = %s AND id IN (" + ", ".join(["%s"] * len(done)) + ")",
                    [COMPLETED, *[v for o in done for v in (o.row_id, o.s3_key)], attempt.batch_id, RUNNING,
                     *[o.row_id for o in done]],
                )
                n += cur.rowcount
            if failed:
                cur.execute(
                    "UPDATE message_tracking SET last_error = CASE id " + " ".join(["WHEN %s THEN %s"] * len(failed))
                    + " END, " + _FAIL_ASSIGNMENTS
                    + " WHERE batch_id = %s AND status = %s AND id IN (" + ", ".join(["%s"] * len(failed)) + ")",
                    [*[v for o in failed for v in (o.row_id, (o.error or "unknown error")[:4000])],
                     *_fail_params(policy), attempt.batch_id, RUNNING, *[o.row_id for o in failed]],
                )
                n += cur.rowcount
            return n

        changed += _locking_retries(conn, work)
    return changed


def finish_batch(conn: Any, attempt: BatchAttempt, *, bytes_written: int = 0) -> dict[str, int]:
    """Close the batch with its counts, read back from message_tracking so they are always true."""
    def work(cur: Any) -> dict[str, int]:
        _fence(cur, attempt.batch_id, attempt.token)
        cur.execute(
            "SELECT COALESCE(SUM(status = %s), 0), COALESCE(SUM(status IN (%s, %s)), 0), COUNT(*)"
            " FROM message_tracking WHERE batch_id = %s",
            (COMPLETED, FAILED, DEAD, attempt.batch_id),
        )
        completed, failed, total = (int(v) for v in cur.fetchone())
        cur.execute(
            "UPDATE batch_progress SET status = %s, completed = %s, failed = %s, total = %s, lease_expires_at = NULL,"
            " bytes_written = bytes_written + %s, finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (COMPLETED, completed, failed, total, bytes_written, attempt.batch_id),
        )
        return {"completed": completed, "failed": failed, "total": total}

    return _locking_retries(conn, work)


def fail_batch(conn: Any, attempt: BatchAttempt, error: str, *, policy: RetryPolicy = RetryPolicy()) -> None:
    """The attempt could not proceed: its running messages each spend an attempt and become failed
    (dead after the last), so a batch that keeps failing ends instead of looping for ever."""
    def work(cur: Any) -> None:
        _fence(cur, attempt.batch_id, attempt.token)
        _fail_batch_rows(cur, attempt.batch_id, error, policy, statuses=(RUNNING,))

    _locking_retries(conn, work)


def _fail_batch_rows(cur: Any, batch_id: int, error: str, policy: RetryPolicy, *, statuses: tuple[str, ...],
                     new_attempt: bool = False) -> None:
    # A stalled batch also moves its attempt counter on (fencing the stalled worker) and forgets it
    # was queued, so the task's retry queues it again.
    cur.execute(
        "UPDATE batch_progress SET status = %s, last_error = %s, finished_at = UTC_TIMESTAMP(6),"
        " lease_expires_at = NULL" + (", attempts = attempts + 1, dispatched_at = NULL" if new_attempt else "")
        + " WHERE id = %s",
        (FAILED, error[:4000], batch_id),
    )
    cur.execute(
        "UPDATE message_tracking SET last_error = %s, " + _FAIL_ASSIGNMENTS + " WHERE batch_id = %s AND status IN ("
        + ", ".join(["%s"] * len(statuses)) + ")",
        [f"batch failed: {error}"[:4000], *_fail_params(policy), batch_id, *statuses],
    )


def expire_stalled_batch(conn: Any, batch_id: int, *, policy: RetryPolicy = RetryPolicy()) -> str | None:
    """Fail a batch whose lease ran out before it finished (its Lambda timed out, ran out of memory or
    never started); returns the reason, or None when the batch is not stalled.

    The batch's attempt counter moves on, so the stalled attempt's late writes are refused.
    """
    def work(cur: Any) -> str | None:
        cur.execute("SELECT status, lease_expires_at, lease_expires_at < UTC_TIMESTAMP(6) FROM batch_progress"
                    " WHERE id = %s FOR UPDATE", (batch_id,))
        row = cur.fetchone()
        if row is None or row[0] not in (PENDING, RUNNING) or not row[2]:
            return None
        reason = (f"stalled: the batch was still {row[0]} when its lease ran out at {row[1]:%Y-%m-%d %H:%M:%S} "
                  "UTC (the Lambda timed out, ran out of memory, or never started it)")
        _fail_batch_rows(cur, batch_id, reason, policy, statuses=(PENDING, RUNNING), new_attempt=True)
        return reason

    return _locking_retries(conn, work)


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
            " lease_expires_at = NULL, finished_at = NULL WHERE id = %s",
            (PENDING, batch_id),
        )
    conn.commit()
    return reopened


def object_references(conn: Any, s3_key: str, *, status: str | None = None) -> set[str]:
    """The ids of the messages whose current document is in the object `s3_key` (of one status)."""
    with conn.cursor() as cur:
        if status is None:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s", (s3_key,))
        else:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s AND status = %s", (s3_key, status))
        ids = {r[0] for r in cur.fetchall()}
    conn.commit()
    return ids


def object_lock(conn: Any, s3_key: str, timeout: int = 60) -> None:
    """Serialise rewrites of one S3 object across workers (a MySQL named lock, held per connection)."""
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout))
        if cur.fetchone()[0] != 1:
            raise TrackingError(f"could not lock S3 object {s3_key!r} within {timeout}s; another worker holds it")


def object_unlock(conn: Any, s3_key: str) -> None:
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cur.fetchall()


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


@dataclass(frozen=True)
class JobShare:
    """How many of an interval's messages one job holds or exported."""

    job_id: int | None
    dag_id: str | None
    run_id: str | None
    messages: int

    def label(self) -> str:
        return f"job {self.job_id} ({self.dag_id} run {self.run_id})"


def held_by_other_jobs(conn: Any, job: Job) -> list[JobShare]:
    """Messages of the job's interval that other live jobs still have to export, by job."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT j.id, j.dag_id, j.run_id, COUNT(*) FROM message_tracking m JOIN job_runs j"
            " ON (j.id = m.job_id OR (m.job_id IS NULL AND j.dag_id = m.dag_id AND j.run_id = m.run_id))"
            " WHERE m.message_ts >= %s AND m.message_ts < %s AND m.status IN (%s, %s) AND " + _LIVE_JOB
            + " AND j.id <> %s GROUP BY j.id, j.dag_id, j.run_id ORDER BY j.id",
            (utc_naive(job.start), utc_naive(job.end), PENDING, RUNNING, job.job_id),
        )
        shares = [JobShare(int(i), d, r, int(n)) for i, d, r, n in cur.fetchall()]
    conn.commit()
    return shares


def completed_by_job(conn: Any, start: datetime, end: datetime) -> list[JobShare]:
    """The interval's completed messages by the job that exported them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT m.job_id, j.dag_id, j.run_id, COUNT(*) FROM message_tracking m LEFT JOIN job_runs j"
            " ON j.id = m.job_id WHERE m.message_ts >= %s AND m.message_ts < %s AND m.status = %s"
            " GROUP BY m.job_id, j.dag_id, j.run_id ORDER BY m.job_id",
            (utc_naive(start), utc_naive(end), COMPLETED),
        )
        shares = [JobShare(None if i is None else int(i), d, r, int(n)) for i, d, r, n in cur.fetchall()]
    conn.commit()
    return shares


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
    """INSERT IGNORE one chunk of ids (no commit); returns how many were new.

    An id tracked before under another timestamp (its document's time changed in Elasticsearch)
    is re-homed: it takes the new timestamp and becomes pending again, so the run of its new day
    exports it there and the object of its old day is removed as superseded.
    """
    params: list[Any] = []
    for hit in hits:
        params += [hit.message_id, utc_naive(hit.timestamp), dag_id, run_id]
    with conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO message_tracking (message_id, message_ts, dag_id, run_id) VALUES "
                    + _values(len(hits), 4), params)
        new = int(cur.rowcount)
        if new < len(hits):
            _rehome(cur, hits, dag_id=dag_id, run_id=run_id)
        return new


def _rehome(cur: Any, hits: list[Any], *, dag_id: str, run_id: str) -> None:
    seen = {hit.message_id: utc_naive(hit.timestamp) for hit in hits}
    cur.execute("SELECT id, message_id, message_ts FROM message_tracking WHERE message_id IN ("
                + ", ".join(["%s"] * len(seen)) + ")", list(seen))
    for row_id, message_id, old_ts in cur.fetchall():
        new_ts = seen.get(message_id)
        if new_ts is None or old_ts == new_ts:
            continue
        cur.execute(
            "UPDATE message_tracking SET last_error = %s, message_ts = %s, status = %s, job_id = NULL,"
            " batch_id = NULL, attempts = 0, next_attempt_at = NULL, lease_expires_at = NULL, dag_id = %s,"
            " run_id = %s WHERE id = %s AND status <> %s",
            (f"re-homed: its timestamp changed in Elasticsearch from {old_ts.isoformat()} to {new_ts.isoformat()}",
             new_ts, PENDING, dag_id, run_id, row_id, RUNNING),
        )


# ---------------------------------------------------------------------------- retry

def claim_failed(conn: Any, job: Job, *, only_job_id: int | None = None, start: datetime | None = None,
                 end: datetime | None = None, revive_dead: bool = False, limit: int = 1_000_000) -> int:
    """Give this (retry) job the failed messages whose next attempt is due; returns how many.

    Also takes messages whose worker died (lease expired) and pending ones no live job holds (their
    run ended before exporting them). With `revive_dead`, dead messages are taken too and start
    counting attempts again.
    """
    due = ("((status = %s AND (next_attempt_at IS NULL OR next_attempt_at <= UTC_TIMESTAMP(6)))"
           " OR (status = %s AND lease_expires_at < UTC_TIMESTAMP(6))"
           " OR (status = %s AND NOT " + _HELD_BY_LIVE_JOB + ")")
    params: list[Any] = [FAILED, RUNNING, PENDING, job.job_id]
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
        _drop_unfinished_batches(cur, job.job_id)
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


def recent_jobs(conn: Any, limit: int = 25, dag_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
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
            [COMPLETED, *(ids or []), limit],
        )
        rows = _rows(cur)
    conn.commit()
    return rows


def job_batches(conn: Any, job_id: int, limit: int = 1000,
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
        rows = _rows(cur)
    conn.commit()
    return rows


def problem_messages(conn: Any, limit: int = 100, job_id: int | None = None,
                     dag_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Failed and dead messages with their reasons, most recently changed first; with `dag_ids`, only
    those of these DAGs' jobs (message_tracking.dag_id is set with job_id)."""
    ids = None if dag_ids is None else sorted(set(dag_ids))
    if ids == []:
        return []
    where, args = "status IN (%s, %s)", [FAILED, DEAD]
    if job_id is not None:
        where, args = where + " AND job_id = %s", args + [job_id]
    if ids is not None:
        where, args = where + " AND dag_id IN (" + ", ".join(["%s"] * len(ids)) + ")", args + ids
    with conn.cursor() as cur:
        cur.execute(f"SELECT message_id, status, attempts, job_id, batch_id, last_error, next_attempt_at, updated_at"
                    f" FROM message_tracking WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT %s",
                    args + [limit])
        rows = _rows(cur)
    conn.commit()
    return rows


# ---------------------------------------------------------------------------- dispatch (SQS)

def mark_dispatched(conn: Any, batch_ids: list[int], *, lease_seconds: int) -> None:
    """Note the batches were queued; one that no worker starts within `lease_seconds` is stalled."""
    if not batch_ids:
        return
    with conn.cursor() as cur:
        cur.execute("UPDATE batch_progress SET dispatched_at = UTC_TIMESTAMP(6),"
                    " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE id IN ("
                    + ", ".join(["%s"] * len(batch_ids)) + ")", [lease_seconds, *batch_ids])
    conn.commit()


def batch_state(conn: Any, batch_id: int) -> dict[str, Any]:
    """The batch_progress row of a batch, as a dict."""
    with conn.cursor() as cur:
        cur.execute("SELECT id AS batch_id, job_id, batch_no, status, total, completed, failed, bytes_written,"
                    " attempts, started_at, finished_at, dispatched_at, lease_expires_at, last_error"
                    " FROM batch_progress WHERE id = %s", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise TrackingError(f"batch {batch_id} does not exist in batch_progress; was the plan replaced?")
        state = dict(zip([d[0] for d in cur.description], row, strict=True))
    conn.commit()  # a fresh snapshot on the next call (REPEATABLE READ)
    return state
