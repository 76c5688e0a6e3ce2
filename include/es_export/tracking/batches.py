"""A batch's attempts: start under a lease, record outcomes, finish, fail, stall, reopen; a job's progress.

Every write of an attempt is fenced by its token (the batch's attempt counter, checked under the
batch row's lock), so a stale attempt (a Lambda re-invoked, a queue delivering twice) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from typing import Any

from es_export.errors import ConfigError, StaleAttempt, TrackingError
from es_export.model import Batch, BatchAttempt, BatchProgress, Outcome, RetryPolicy, Status, TrackedMessage
from es_export.tracking._sql import Connection, Cursor, chunks, in_transaction

DEFAULT_POLICY = RetryPolicy()


def _fence(cur: Cursor, batch_id: int, token: int) -> None:
    """Lock the batch row; refuse unless `token` is still its running attempt."""
    cur.execute("SELECT attempts, status FROM batch_progress WHERE id = %s FOR UPDATE", (batch_id,))
    row = cur.fetchone()
    if row is None:
        raise StaleAttempt(batch_id, token)
    if int(row[0]) != token or row[1] != Status.RUNNING:
        raise StaleAttempt(batch_id, token, now_at=int(row[0]), now_status=row[1])


def start_batch(conn: Connection, batch_id: int, *, lease_seconds: int = 7200,
                expect: Batch | None = None) -> BatchAttempt:
    """Start a new attempt: the batch and its unfinished messages become running under a lease.

    The new attempt takes the batch's running messages back at once (the earlier attempt died or
    is fenced out by the new token); other jobs must wait until the lease expires. A batch that is
    already completed (a queue delivering twice) is left as it is.

    The job and number of the batch come from its batch_progress row, never from the sender: with
    `expect` (a descriptor from a queue or an invoke), a descriptor whose job_id or batch_no differ
    from the row is refused before anything changes, so a forged or garbled payload cannot make this
    attempt name, or delete, another batch's files.
    """
    def work(cur: Cursor) -> BatchAttempt:
        cur.execute("SELECT attempts, status, job_id, batch_no FROM batch_progress WHERE id = %s FOR UPDATE",
                    (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise StaleAttempt(batch_id, None)
        job_id, batch_no = int(row[2]), int(row[3])
        if expect is not None and (expect.job_id, expect.batch_no) != (job_id, batch_no):
            raise ConfigError(
                f"the payload names batch_id {batch_id} with job_id {expect.job_id} and batch_no {expect.batch_no}, "
                f"but batch {batch_id} is batch_no {batch_no} of job {job_id} in batch_progress; the payload is "
                "refused and nothing was changed. Send the descriptor Airflow planned (a forged or garbled "
                "queue message or invoke)")
        if row[1] == Status.COMPLETED:
            return BatchAttempt(batch_id, int(row[0]), [], already_completed=True, job_id=job_id, batch_no=batch_no)
        token = int(row[0]) + 1
        cur.execute(
            "UPDATE batch_progress SET status = %s, attempts = %s, receives = receives + 1,"
            " started_at = UTC_TIMESTAMP(6), finished_at = NULL,"
            " last_error = NULL, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE id = %s",
            (Status.RUNNING, token, lease_seconds, batch_id),
        )
        cur.execute(
            "UPDATE message_tracking SET status = %s, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND"
            " WHERE batch_id = %s AND status IN (%s, %s, %s)",
            (Status.RUNNING, lease_seconds, batch_id, Status.PENDING, Status.FAILED, Status.RUNNING),
        )
        cur.execute("SELECT id, message_id, message_ts, s3_key, source_index FROM message_tracking"
                    " WHERE batch_id = %s AND status = %s ORDER BY id", (batch_id, Status.RUNNING))
        messages = [TrackedMessage(int(r[0]), r[1], r[2].replace(tzinfo=UTC), r[3], r[4]) for r in cur.fetchall()]
        return BatchAttempt(batch_id, token, messages, job_id=job_id, batch_no=batch_no)

    return in_transaction(conn, work)


def note_uploads(conn: Connection, attempt: BatchAttempt, keys: list[str]) -> None:
    """Record the files this attempt is about to upload (fenced), so one it never records can be swept.

    The rows go in the same transaction that finishes the batch (`finish_batch`): a row that is
    still there once its attempt is no longer the batch's running one names an orphan file.
    """
    if not keys:
        return

    def work(cur: Cursor) -> None:
        _fence(cur, attempt.batch_id, attempt.token)
        cur.execute("INSERT INTO object_uploads (s3_key, batch_id, attempt) VALUES "
                    + ", ".join(["(%s, %s, %s)"] * len(keys)),
                    [v for key in keys for v in (key, attempt.batch_id, attempt.token)])

    in_transaction(conn, work)


# Assignments run left to right: `attempts` is already the new count when status and the next
# attempt's time are computed. `attempts` counts failures since the message was last exported (an
# export sets it to 0), so `dead` means max_attempts failures in a row, however often it was exported
# before; `failed_job_id` keeps the job whose run failed it first (es_message_retry's job_id param).
_FAIL_ASSIGNMENTS = (
    "attempts = attempts + 1, failed_job_id = COALESCE(failed_job_id, job_id),"
    f" status = IF(attempts >= %s, '{Status.DEAD}', '{Status.FAILED}'), lease_expires_at = NULL,"
    f" next_attempt_at = IF(status = '{Status.FAILED}',"
    " UTC_TIMESTAMP(6) + INTERVAL LEAST(%s * POW(2, attempts - 1), %s) SECOND, NULL)"
)


def _fail_params(policy: RetryPolicy) -> list[Any]:
    return [policy.max_attempts, policy.base_seconds, policy.max_seconds]


def record_outcomes(conn: Connection, attempt: BatchAttempt, outcomes: Iterable[Outcome], *,
                    policy: RetryPolicy = DEFAULT_POLICY, chunk_size: int = 1000) -> int:
    """Write each message's outcome, fenced by the attempt's token; returns how many rows changed.

    Only messages still running in this batch are written, so a message another job took over
    meanwhile keeps that job's state. Each chunk is one transaction, run again on a deadlock.
    """
    changed = 0
    for chunk in chunks(outcomes, chunk_size):
        done = [o for o in chunk if o.ok]
        failed = [o for o in chunk if not o.ok]

        def work(cur: Cursor, done: list[Outcome] = done, failed: list[Outcome] = failed) -> int:
            _fence(cur, attempt.batch_id, attempt.token)
            n = 0
            if done:
                key_sql, key_params = _per_row("s3_key", [(o.row_id, o.s3_key) for o in done])
                version_sql, version_params = _per_row("source_version", [(o.row_id, o.source_version) for o in done])
                cur.execute(
                    f"UPDATE message_tracking SET status = %s, attempts = 0, failed_job_id = NULL, {key_sql},"
                    f" {version_sql}, last_error = NULL, lease_expires_at = NULL, next_attempt_at = NULL,"
                    " exported_at = UTC_TIMESTAMP(6)"
                    " WHERE batch_id = %s AND status = %s AND id IN (" + ", ".join(["%s"] * len(done)) + ")",
                    [Status.COMPLETED, *key_params, *version_params, attempt.batch_id, Status.RUNNING,
                     *[o.row_id for o in done]],
                )
                n += cur.rowcount
            if failed:
                cur.execute(
                    "UPDATE message_tracking SET last_error = CASE id " + " ".join(["WHEN %s THEN %s"] * len(failed))
                    + " END, " + _FAIL_ASSIGNMENTS
                    + " WHERE batch_id = %s AND status = %s AND id IN (" + ", ".join(["%s"] * len(failed)) + ")",
                    [*[v for o in failed for v in (o.row_id, (o.error or "unknown error")[:4000])],
                     *_fail_params(policy), attempt.batch_id, Status.RUNNING, *[o.row_id for o in failed]],
                )
                n += cur.rowcount
            return n

        changed += in_transaction(conn, work)
    return changed


def _per_row(column: str, values: list[tuple[int, Any]]) -> tuple[str, list[Any]]:
    """`column = %s` when every row gets the same value (an NDJSON batch of one day: one file), else a CASE on
    the row id: the server then compares each row with one value, not with every row of the statement."""
    if len({v for _, v in values}) == 1:
        return f"{column} = %s", [values[0][1]]
    return f"{column} = CASE id " + " ".join(["WHEN %s THEN %s"] * len(values)) + " END", [
        v for pair in values for v in pair]


def finish_batch(conn: Connection, attempt: BatchAttempt, *, bytes_written: int = 0) -> dict[str, int]:
    """Close the batch with its counts, read back from message_tracking so they are always true."""
    def work(cur: Cursor) -> dict[str, int]:
        _fence(cur, attempt.batch_id, attempt.token)
        cur.execute(
            "SELECT COALESCE(SUM(status = %s), 0), COALESCE(SUM(status IN (%s, %s)), 0), COUNT(*)"
            " FROM message_tracking WHERE batch_id = %s",
            (Status.COMPLETED, Status.FAILED, Status.DEAD, attempt.batch_id),
        )
        completed, failed, total = (int(v) for v in cur.fetchone())
        cur.execute(
            "UPDATE batch_progress SET status = %s, completed = %s, failed = %s, total = %s, lease_expires_at = NULL,"
            " bytes_written = bytes_written + %s, finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (Status.COMPLETED, completed, failed, total, bytes_written, attempt.batch_id),
        )
        # The attempt's files are now what its completed rows say they are: no longer in flight.
        cur.execute("DELETE FROM object_uploads WHERE batch_id = %s AND attempt = %s",
                    (attempt.batch_id, attempt.token))
        return {"completed": completed, "failed": failed, "total": total}

    return in_transaction(conn, work)


def fail_batch(conn: Connection, attempt: BatchAttempt, error: str, *, policy: RetryPolicy = DEFAULT_POLICY) -> None:
    """The attempt could not proceed: its running messages each spend an attempt and become failed
    (dead after the last), so a batch that keeps failing ends instead of looping for ever."""
    def work(cur: Cursor) -> None:
        _fence(cur, attempt.batch_id, attempt.token)
        _fail_batch_rows(cur, attempt.batch_id, error, policy, statuses=(Status.RUNNING,))

    in_transaction(conn, work)


def _fail_batch_rows(cur: Cursor, batch_id: int, error: str, policy: RetryPolicy, *, statuses: tuple[Status, ...],
                     new_attempt: bool = False) -> None:
    # A stalled batch also moves its attempt counter on (fencing the stalled worker) and forgets it
    # was queued, so the task's retry queues it again.
    cur.execute(
        "UPDATE batch_progress SET status = %s, last_error = %s, finished_at = UTC_TIMESTAMP(6),"
        " lease_expires_at = NULL" + (", attempts = attempts + 1, dispatched_at = NULL" if new_attempt else "")
        + " WHERE id = %s",
        (Status.FAILED, error[:4000], batch_id),
    )
    cur.execute(
        "UPDATE message_tracking SET last_error = %s, " + _FAIL_ASSIGNMENTS + " WHERE batch_id = %s AND status IN ("
        + ", ".join(["%s"] * len(statuses)) + ")",
        [f"batch failed: {error}"[:4000], *_fail_params(policy), batch_id, *statuses],
    )


def expire_stalled_batch(conn: Connection, batch_id: int, *, policy: RetryPolicy = DEFAULT_POLICY) -> str | None:
    """Fail a batch whose lease ran out before it finished (its Lambda timed out, ran out of memory or
    never started); returns the reason, or None when the batch is not stalled.

    The batch's attempt counter moves on, so the stalled attempt's late writes are refused.
    """
    def work(cur: Cursor) -> str | None:
        cur.execute("SELECT status, lease_expires_at, lease_expires_at < UTC_TIMESTAMP(6) FROM batch_progress"
                    " WHERE id = %s FOR UPDATE", (batch_id,))
        row = cur.fetchone()
        if row is None or row[0] not in (Status.PENDING, Status.RUNNING) or not row[2]:
            return None
        reason = (f"stalled: the batch was still {row[0]} when its lease ran out at {row[1]:%Y-%m-%d %H:%M:%S} "
                  "UTC (the Lambda timed out, ran out of memory, or never started it)")
        _fail_batch_rows(cur, batch_id, reason, policy, statuses=(Status.PENDING, Status.RUNNING), new_attempt=True)
        return reason

    return in_transaction(conn, work)


def reopen_batch(conn: Connection, batch_id: int) -> int:
    """A person ran a finished batch again (cleared its task): export all of it again.

    Its completed and failed messages go back to pending; dead ones stay dead (es_message_retry
    with revive_dead=true brings those back). Returns how many messages were reopened.
    """
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE message_tracking SET status = %s, next_attempt_at = NULL, lease_expires_at = NULL"
            " WHERE batch_id = %s AND status IN (%s, %s)",
            (Status.PENDING, batch_id, Status.COMPLETED, Status.FAILED),
        )
        reopened = cur.rowcount
        cur.execute(
            "UPDATE batch_progress SET status = %s, completed = 0, failed = 0, dispatched_at = NULL,"
            " lease_expires_at = NULL, finished_at = NULL WHERE id = %s",
            (Status.PENDING, batch_id),
        )
    conn.commit()
    return reopened


def mark_dispatched(conn: Connection, batch_ids: list[int], *, lease_seconds: int) -> None:
    """Note the batches were queued; one that no worker starts within `lease_seconds` is stalled."""
    if not batch_ids:
        return
    with conn.cursor() as cur:
        # A new queue message: SQS counts its receives from zero (maxReceiveCount applies per message).
        cur.execute("UPDATE batch_progress SET dispatched_at = UTC_TIMESTAMP(6), receives = 0,"
                    " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE id IN ("
                    + ", ".join(["%s"] * len(batch_ids)) + ")", [lease_seconds, *batch_ids])
    conn.commit()


def batch_state(conn: Connection, batch_id: int) -> dict[str, Any]:
    """The batch_progress row of a batch, as a dict."""
    with conn.cursor() as cur:
        cur.execute("SELECT id AS batch_id, job_id, batch_no, status, total, completed, failed, bytes_written,"
                    " attempts, receives, started_at, finished_at, dispatched_at, lease_expires_at, last_error"
                    " FROM batch_progress WHERE id = %s", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise TrackingError(f"batch {batch_id} does not exist in batch_progress; was the plan replaced?")
        state = dict(zip([d[0] for d in cur.description], row, strict=True))
    conn.commit()  # a fresh snapshot on the next call (REPEATABLE READ)
    return state


def progress_of_job(conn: Connection, job_id: int) -> dict[int, BatchProgress]:
    """Every batch of a job, by id, in ONE statement: the poll that all of a job's waiting batches share.

    It does not commit (that would be a second statement per poll): run it on an autocommit
    connection, or the snapshot of REPEATABLE READ would show the same rows for ever.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT id, status, receives, dispatched_at IS NULL,"
                    " COALESCE(lease_expires_at < UTC_TIMESTAMP(6), 0) FROM batch_progress WHERE job_id = %s",
                    (job_id,))
        return {int(r[0]): BatchProgress(int(r[0]), Status(r[1]), int(r[2]), bool(r[3]), bool(r[4]))
                for r in cur.fetchall()}
