"""Which job exports which message: ids arriving from the extract, claims, and the cut into batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from es_export.model import Batch, Job, Status
from es_export.tracking._sql import Connection, Cursor, in_transaction, time_slices, utc_naive, values_sql
from es_export.tracking.jobs import HELD_BY_LIVE_JOB


def insert_chunk(conn: Connection, hits: list[Any], *, job: Job,
                 check_moved: Callable[[list[tuple[str, str, str]]], None] | None = None) -> int:
    """INSERT IGNORE one chunk of ids (no commit); returns how many were new.

    A new id is held by the extracting job at once (its job_id, as its claim would set it), so the
    claim finds it already in place and writes nothing: a row written once fewer, and no index entry
    of it moved (issue 25: MariaDB CPU). An id tracked before under another timestamp (its document's
    time changed in Elasticsearch) is re-homed: it takes the new timestamp and becomes pending again,
    held by this job, so the run of its new day exports it there and the object of its old day is
    removed as superseded. An id found in another concrete index than the one tracked is first given
    to `check_moved` as (id, tracked index, new index), which raises when both hold it (two copies of
    one id), before anything is changed.
    """
    params: list[Any] = []
    for hit in hits:
        params += [hit.message_id, utc_naive(hit.timestamp), hit.index, job.job_id, job.dag_id, job.run_id]
    with conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO message_tracking (message_id, message_ts, source_index, job_id, dag_id,"
                    " run_id) VALUES " + values_sql(len(hits), 6), params)
        new = int(cur.rowcount)
        if new < len(hits):
            _rehome(cur, hits, job=job, check_moved=check_moved)
        return new


def _rehome(cur: Cursor, hits: list[Any], *, job: Job,
            check_moved: Callable[[list[tuple[str, str, str]]], None] | None) -> None:
    seen = {hit.message_id: hit for hit in hits}
    cur.execute("SELECT id, message_id, message_ts, source_index FROM message_tracking WHERE message_id IN ("
                + ", ".join(["%s"] * len(seen)) + ")", list(seen))
    found = cur.fetchall()
    if check_moved is not None:
        check_moved([(m, old, seen[m].index) for _, m, _, old in found
                     if m in seen and old and seen[m].index and seen[m].index != old])
    for row_id, message_id, old_ts, old_index in found:
        hit = seen.get(message_id)
        if hit is None:
            continue
        new_ts = utc_naive(hit.timestamp)
        if old_ts == new_ts:
            if hit.index and hit.index != old_index:  # tracked before indices were, or moved (a rollover)
                cur.execute("UPDATE message_tracking SET source_index = %s WHERE id = %s", (hit.index, row_id))
            continue
        cur.execute(
            "UPDATE message_tracking SET last_error = %s, message_ts = %s, source_index = %s, status = %s,"
            " job_id = %s, batch_id = NULL, attempts = 0, next_attempt_at = NULL, lease_expires_at = NULL,"
            " dag_id = %s, run_id = %s WHERE id = %s AND status <> %s",
            (f"re-homed: its timestamp changed in the source from {old_ts.isoformat()} to {new_ts.isoformat()}",
             new_ts, hit.index, Status.PENDING, job.job_id, job.dag_id, job.run_id, row_id, Status.RUNNING),
        )


# Rows one claim or cut statement changes at most, each in a transaction of its own: a 10M-message
# day is claimed in 200 short transactions, not one holding 10M row locks and their undo log while
# other runs, the retry DAG and replication wait behind it.
CHUNK_ROWS = 50_000


def claim_for_job(conn: Connection, job: Job, *, reprocess: bool, chunk_rows: int = CHUNK_ROWS) -> int:
    """Give this job the interval's messages that still need exporting; returns how many it now holds to
    cut into batches (taken now, or already its own: what its extract tracked, what an earlier try of
    this plan took).

    Never taken: a message another live job holds (claimed, or extracted and not yet planned: that
    job exports it, and this job's reconcile waits for it), and one another worker is exporting
    (running, lease not expired). Taken: failed ones, pending ones nobody live holds, running ones
    whose lease expired or that this job's own earlier attempt left behind, and with `reprocess`
    completed ones. The job's unfinished batches of an earlier attempt are replaced (dropped first,
    which fences any attempt of them still running); its completed batches stay, so a rerun batches
    only what is left to do.

    The interval is claimed in pieces of at most `chunk_rows` rows (by message_ts, see
    `time_slices`), each its own short transaction; every row lies in one piece, so each message is
    decided once, by the same rule as a single statement would. A message another run claims while
    this one is between pieces is held by that run and left to it.
    """
    taken = [Status.PENDING, Status.FAILED, Status.COMPLETED] if reprocess else [Status.PENDING, Status.FAILED]
    in_transaction(conn, partial(_drop_unfinished_batches, job_id=job.job_id))
    # The index named: a piece is at most `chunk_rows` rows, yet MariaDB scans the whole table
    # instead when the piece is a large share of it (a small table, or a big day in a young one).
    sql = ("UPDATE message_tracking FORCE INDEX (ix_message_tracking_ts) SET job_id = %s, batch_id = NULL, status = %s,"
           " dag_id = %s, run_id = %s, lease_expires_at = NULL WHERE message_ts >= %s AND message_ts < %s AND"
           " ((status IN ("
           + ", ".join(["%s"] * len(taken)) + ") AND NOT " + HELD_BY_LIVE_JOB + ")"
           " OR (status = %s AND (lease_expires_at < UTC_TIMESTAMP(6) OR job_id = %s)))")
    for low, high in time_slices(conn, job.start, job.end, chunk_rows):
        params = [job.job_id, Status.PENDING, job.dag_id, job.run_id, low, high, *taken, job.job_id, job.job_id,
                  Status.RUNNING, job.job_id]
        in_transaction(conn, partial(_changed, sql=sql, params=params))
    return unbatched(conn, job)


def unbatched(conn: Connection, job: Job) -> int:
    """How many messages the job holds that no batch has yet. Counted, not summed from the claim's changed
    rows: a row the job already held as the claim would leave it is not changed, so not counted there."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM message_tracking FORCE INDEX (ix_message_tracking_job)"
                    " WHERE job_id = %s AND batch_id IS NULL AND status = %s", (job.job_id, Status.PENDING))
        count = int(cur.fetchone()[0])
    conn.commit()
    return count


def claim_failed(conn: Connection, job: Job, *, only_job_id: int | None = None, start: datetime | None = None,
                 end: datetime | None = None, revive_dead: bool = False, limit: int = 1_000_000,
                 chunk_rows: int = CHUNK_ROWS) -> int:
    """Give this (retry) job the failed messages whose next attempt is due; returns how many.

    Also takes messages whose worker died (lease expired) and pending ones no live job holds (their
    run ended before exporting them). With `revive_dead`, dead messages are taken too and start
    counting attempts again. At most `limit` messages, lowest ids first, in statements of at most
    `chunk_rows` rows, each its own transaction. They find their rows through the status index
    (completed rows, however many, are never read), and a row one statement claimed no longer
    matches the next.
    """
    in_transaction(conn, partial(_drop_unfinished_batches, job_id=job.job_id))
    # A pending row this job already holds, unbatched, is where a claim puts it: not taken again.
    due = ("((status = %s AND (next_attempt_at IS NULL OR next_attempt_at <= UTC_TIMESTAMP(6)))"
           " OR (status = %s AND lease_expires_at < UTC_TIMESTAMP(6))"
           " OR (status = %s AND NOT (job_id <=> %s AND batch_id IS NULL) AND NOT " + HELD_BY_LIVE_JOB + ")")
    params: list[Any] = [Status.FAILED, Status.RUNNING, Status.PENDING, job.job_id, job.job_id, job.job_id]
    if revive_dead:
        due += " OR status = %s"
        params.append(Status.DEAD)
    conditions = [due + ")"]
    if only_job_id is not None:  # the job that failed them first: the one an alert names
        conditions.append("failed_job_id = %s")
        params.append(only_job_id)
    if start is not None:
        conditions.append("message_ts >= %s")
        params.append(utc_naive(start))
    if end is not None:
        conditions.append("message_ts < %s")
        params.append(utc_naive(end))
    sql = ("UPDATE message_tracking SET attempts = IF(status = %s, 0, attempts), job_id = %s, batch_id = NULL,"
           " status = %s, dag_id = %s, run_id = %s, lease_expires_at = NULL WHERE " + " AND ".join(conditions)
           + " ORDER BY id LIMIT %s")
    claimed = 0
    while claimed < limit:
        size = min(chunk_rows, limit - claimed)
        values = [Status.DEAD, job.job_id, Status.PENDING, job.dag_id, job.run_id, *params, size]
        n = in_transaction(conn, partial(_changed, sql=sql, params=values))
        claimed += n
        if n < size:
            break
    return claimed


def _changed(cur: Cursor, sql: str, params: list[Any]) -> int:
    cur.execute(sql, params)
    return int(cur.rowcount)


def _drop_unfinished_batches(cur: Cursor, job_id: int) -> None:
    # Deleting the row also fences any attempt of those batches still running somewhere.
    cur.execute("DELETE FROM batch_progress WHERE job_id = %s AND status <> %s", (job_id, Status.COMPLETED))


def effective_batch_size(total: int, batch_size: int, max_batches: int) -> int:
    """`batch_size`, raised just enough that `total` messages fit in at most `max_batches` batches."""
    needed = -(-total // max_batches) if total else 0
    return max(batch_size, needed)


def plan_batches(conn: Connection, job: Job, *, batch_size: int, chunk_rows: int = CHUNK_ROWS) -> list[Batch]:
    """Cut the job's claimed, unbatched messages into batches of `batch_size` (keyset over the id).

    Only what the claim just took is cut, so the number of batches is at most
    ceil(claimed / batch_size) whatever earlier attempts of the job did. Numbers continue after the
    job's completed batches, so no two batches of a job ever share a number. Each transaction
    writes at most `chunk_rows` messages (a larger batch is filled in several); a plan that stops
    half way leaves unfinished batches that nothing runs, and the job's next claim replaces them.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(MAX(batch_no) + 1, 0) FROM batch_progress WHERE job_id = %s", (job.job_id,))
        next_no = int(cur.fetchone()[0])
    conn.commit()
    batches = []
    last_id = 0
    while True:
        batch_id, size = None, 0
        while size < batch_size:
            high = _page_end(conn, job, last_id, min(chunk_rows, batch_size - size))
            if high is None:
                break
            batch_id, added = in_transaction(conn, partial(_fill, job=job, batch_no=next_no, batch_id=batch_id,
                                                           low=last_id, high=high))
            size += added
            last_id = high
        if batch_id is None:
            break
        batches.append(Batch(job.job_id, batch_id, next_no, size))
        next_no += 1
    return batches


def _page_end(conn: Connection, job: Job, after_id: int, rows: int) -> int | None:
    """The id that ends the next `rows` unbatched messages of the job after `after_id` (None: none left)."""
    with conn.cursor() as cur:
        cur.execute(
            # A range over (job_id, id) after the last page, whatever the optimizer would guess.
            "SELECT MAX(id) FROM (SELECT id FROM message_tracking FORCE INDEX (ix_message_tracking_job)"
            " WHERE job_id = %s AND batch_id IS NULL AND status = %s AND id > %s ORDER BY id LIMIT %s) AS page",
            (job.job_id, Status.PENDING, after_id, rows),
        )
        high = cur.fetchone()[0]
    conn.commit()
    return None if high is None else int(high)


def _fill(cur: Cursor, job: Job, batch_no: int, batch_id: int | None, low: int, high: int) -> tuple[int, int]:
    """Put the job's unbatched messages with ids in (low, high] into a batch (a new one when batch_id
    is None); returns the batch's id and how many messages went in."""
    if batch_id is None:
        cur.execute("INSERT INTO batch_progress (job_id, batch_no, status, total) VALUES (%s, %s, %s, 0)",
                    (job.job_id, batch_no, Status.PENDING))
        batch_id = int(cur.lastrowid)
    cur.execute(
        "UPDATE message_tracking SET batch_id = %s WHERE job_id = %s AND batch_id IS NULL AND status = %s"
        " AND id > %s AND id <= %s",
        (batch_id, job.job_id, Status.PENDING, low, high),
    )
    added = int(cur.rowcount)
    cur.execute("UPDATE batch_progress SET total = total + %s WHERE id = %s", (added, batch_id))
    return batch_id, added
