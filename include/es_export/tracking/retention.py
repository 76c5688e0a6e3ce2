"""Retention: completed message_tracking rows older than a number of days, deleted in small chunks."""

from __future__ import annotations

from functools import partial
from typing import Any

from es_export.errors import TrackingError
from es_export.model import Status
from es_export.tracking._sql import Connection, Cursor, in_transaction, time_slices
from es_export.tracking.jobs import LIVE_JOB

# Rows one DELETE removes at most, each its own transaction: short enough that runs claiming or
# recording outcomes, and a replica applying the binlog, never wait long behind it.
PURGE_CHUNK_ROWS = 10_000


def purge_completed(conn: Connection, older_than_days: int, chunk_rows: int = PURGE_CHUNK_ROWS, *,
                    max_rows: int | None = None) -> int:
    """Delete the completed messages older than `older_than_days` days; returns how many rows went.

    A row goes only when all of these hold:
      - it is `completed`: pending, running, failed and dead rows stay, however old;
      - its message's time (message_ts) and its last change (updated_at) are both older than the
        cutoff, so the rows of an old day exported recently (a backfill, a reprocess) stay for the
        whole retention period after that export;
      - its job is not live (a running job_runs row updated in the last LIVE_JOB_HOURS), and its
        batch is neither pending nor running under a lease that has not expired (an attempt that
        may still write).
    Each DELETE removes at most `chunk_rows` rows and is its own transaction. The rows are found by
    walking the message_ts index from the oldest row up to the cutoff, in pieces of `chunk_rows`
    entries (`time_slices`), so newer rows are never read. Stops once `max_rows` rows went (None:
    no limit); the next call carries on.

    message_tracking is the only table with a row per message; job_runs, batch_progress and
    extract_checkpoints (a row per run or batch) are kept as the runs' history.
    """
    if not isinstance(older_than_days, int) or isinstance(older_than_days, bool) or older_than_days < 1:
        raise TrackingError(f"older_than_days must be a positive number of days, got {older_than_days!r}")
    if chunk_rows < 1:
        raise TrackingError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    with conn.cursor() as cur:
        # The server's clocks: message_ts is naive UTC, updated_at the server's CURRENT_TIMESTAMP.
        cur.execute("SELECT MIN(message_ts), UTC_TIMESTAMP(6) - INTERVAL %s DAY FROM message_tracking",
                    (older_than_days,))
        oldest, cutoff = cur.fetchone()
    conn.commit()
    if oldest is None or oldest >= cutoff:
        return 0
    sql = ("DELETE FROM message_tracking WHERE message_ts >= %s AND message_ts < %s AND status = %s"
           " AND updated_at < NOW(6) - INTERVAL %s DAY"
           " AND NOT EXISTS (SELECT 1 FROM job_runs j WHERE j.id = message_tracking.job_id AND " + LIVE_JOB + ")"
           " AND NOT EXISTS (SELECT 1 FROM batch_progress b WHERE b.id = message_tracking.batch_id"
           " AND b.status IN (%s, %s) AND (b.lease_expires_at IS NULL OR b.lease_expires_at >= UTC_TIMESTAMP(6)))"
           " LIMIT %s")
    purged = 0
    for low, high in time_slices(conn, oldest, cutoff, chunk_rows):
        while max_rows is None or purged < max_rows:
            limit = chunk_rows if max_rows is None else min(chunk_rows, max_rows - purged)
            params = (low, high, Status.COMPLETED, older_than_days, Status.PENDING, Status.RUNNING, limit)
            deleted = in_transaction(conn, partial(_deleted, sql=sql, params=params))
            purged += deleted
            if deleted < limit:
                break
        if max_rows is not None and purged >= max_rows:
            break
    return purged


def _deleted(cur: Cursor, sql: str, params: tuple[Any, ...]) -> int:
    cur.execute(sql, params)
    return int(cur.rowcount)
