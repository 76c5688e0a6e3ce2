"""What es_message_refresh keeps in MySQL: its watermark, the messages to look at again, and which
exported messages it takes to rewrite."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from es_export.errors import ConfigError
from es_export.model import Job, Status
from es_export.tracking._sql import Connection, Cursor, in_transaction, utc_naive, values_sql
from es_export.tracking.jobs import HELD_BY_LIVE_JOB


@dataclass(frozen=True)
class RefreshRow:
    """The tracking row of a message some related document of which changed."""

    row_id: int
    message_id: str
    job_id: int | None
    status: str
    source_version: str | None
    index: str | None
    held: bool  # another live job holds it, or a worker is exporting it right now


def watermark(conn: Connection, name: str) -> datetime | None:
    """Up to when (UTC) the refresh `name` has brought every exported message up to date; None before its first run."""
    with conn.cursor() as cur:
        cur.execute("SELECT watermark FROM refresh_state WHERE name = %s", (name,))
        row = cur.fetchone()
    conn.commit()
    return row[0].replace(tzinfo=UTC) if row else None


def advance_watermark(conn: Connection, name: str, to: datetime, *, job_id: int) -> None:
    """Move the watermark forward to `to` (never back: an older run finishing late changes nothing)."""
    def work(cur: Cursor) -> None:
        cur.execute("INSERT INTO refresh_state (name, watermark, job_id) VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE"
                    " job_id = IF(VALUES(watermark) > watermark, VALUES(job_id), job_id),"
                    " watermark = GREATEST(watermark, VALUES(watermark))", (name, utc_naive(to), job_id))
    in_transaction(conn, work)


def note_recheck(conn: Connection, message_ids: Iterable[str]) -> None:
    """Messages the next refresh looks at whatever its window: a worker was exporting them when their
    documents changed, so its object may hold the state from before the change."""
    ids = sorted(set(message_ids))
    if ids:
        in_transaction(conn, lambda cur: cur.execute(
            "INSERT IGNORE INTO refresh_recheck (message_id) VALUES " + values_sql(len(ids), 1), ids))


def rechecks(conn: Connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT message_id FROM refresh_recheck ORDER BY message_id")
        ids = [r[0] for r in cur.fetchall()]
    conn.commit()
    return ids


def forget_rechecks(conn: Connection, message_ids: list[str]) -> None:
    if message_ids:
        in_transaction(conn, lambda cur: cur.execute(
            "DELETE FROM refresh_recheck WHERE message_id IN (" + ", ".join(["%s"] * len(message_ids)) + ")",
            message_ids))


def refresh_rows(conn: Connection, job: Job, message_ids: list[str]) -> list[RefreshRow]:
    """The tracking rows of these ids (ids never tracked have none)."""
    if not message_ids:
        return []
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, message_id, job_id, status, source_version, source_index, (status = %s OR " + HELD_BY_LIVE_JOB
            + ") FROM message_tracking WHERE message_id IN (" + ", ".join(["%s"] * len(message_ids)) + ")",
            [Status.RUNNING, job.job_id, job.job_id, *message_ids])
        rows = [RefreshRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in cur.fetchall()]
    conn.commit()
    return rows


def claim_changed(conn: Connection, job: Job, row_ids: list[int]) -> int:
    """Give the refresh job these messages to export (again); returns how many it took.

    Only rows still completed or pending and held by no other live job are taken: one an export run
    or a worker took meanwhile is exported by it, with the same current state.
    """
    if not row_ids:
        return 0

    def work(cur: Cursor) -> int:
        cur.execute(
            "UPDATE message_tracking SET job_id = %s, batch_id = NULL, status = %s, dag_id = %s, run_id = %s,"
            " lease_expires_at = NULL WHERE id IN (" + ", ".join(["%s"] * len(row_ids)) + ") AND status IN (%s, %s)"
            " AND NOT " + HELD_BY_LIVE_JOB,
            [job.job_id, Status.PENDING, job.dag_id, job.run_id, *row_ids, Status.COMPLETED, Status.PENDING,
             job.job_id, job.job_id])
        return int(cur.rowcount)
    return in_transaction(conn, work)


def tracked_per_day(conn: Connection, start: date, end: date) -> dict[date, int]:
    """Tracked messages per UTC day of [start, end)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DATE(message_ts), COUNT(*) FROM message_tracking WHERE message_ts >= %s"
                    " AND message_ts < %s GROUP BY DATE(message_ts)",
                    (datetime(start.year, start.month, start.day), datetime(end.year, end.month, end.day)))
        counts: dict[date, int] = {row[0]: int(row[1]) for row in cur.fetchall()}
    conn.commit()
    return counts


def day_in_progress(conn: Connection, job: Job, day: date) -> bool:
    """Whether another live job still exports messages of this day (an export run, a backfill)."""
    low = datetime(day.year, day.month, day.day)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM message_tracking WHERE message_ts >= %s AND message_ts < %s + INTERVAL 1 DAY"
                    " AND status IN (%s, %s) AND " + HELD_BY_LIVE_JOB + " LIMIT 1",
                    (low, low, Status.PENDING, Status.RUNNING, job.job_id, job.job_id))
        busy = cur.fetchone() is not None
    conn.commit()
    return busy


@dataclass(frozen=True)
class ErasableRow:
    message_ts: datetime


def erasable(conn: Connection, message_id: str) -> ErasableRow | None:
    """The message's tracking row, for an erasure; ConfigError while a live run holds the message."""
    with conn.cursor() as cur:
        cur.execute("SELECT message_ts, status = %s OR " + HELD_BY_LIVE_JOB + ", job_id FROM message_tracking"
                    " WHERE message_id = %s", (Status.RUNNING, 0, 0, message_id))
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return None
    if row[1]:
        raise ConfigError(f"message {message_id!r} is being exported by job {row[2]} right now; erase it once that "
                          "run ended (nothing was changed)")
    return ErasableRow(row[0])


def forget_message(conn: Connection, message_id: str) -> None:
    in_transaction(conn, lambda cur: cur.execute("DELETE FROM message_tracking WHERE message_id = %s", (message_id,)))


def record_refreshed_days(conn: Connection, job: Job) -> dict[str, int]:
    """Note, per day of the messages the refresh job exported, when and how many; returns day -> count."""
    def work(cur: Cursor) -> dict[str, int]:
        cur.execute("SELECT DATE(message_ts), COUNT(*) FROM message_tracking FORCE INDEX (ix_message_tracking_job)"
                    " WHERE job_id = %s AND status = %s GROUP BY DATE(message_ts)", (job.job_id, Status.COMPLETED))
        days = {row[0]: int(row[1]) for row in cur.fetchall()}
        if days:
            cur.execute("INSERT INTO refresh_days (day, refreshed_at, rewritten, job_id) VALUES "
                        + values_sql(len(days), 4) + " ON DUPLICATE KEY UPDATE refreshed_at = VALUES(refreshed_at),"
                        " rewritten = VALUES(rewritten), job_id = VALUES(job_id)",
                        [v for day, n in days.items() for v in (day, utc_naive(datetime.now(UTC)), n, job.job_id)])
        return {day.isoformat(): n for day, n in sorted(days.items())}
    return in_transaction(conn, work)


def freshness(conn: Connection, limit: int = 14) -> dict[str, object]:
    """The refresh watermarks, and the days most recently brought up to date (what the status page shows)."""
    with conn.cursor() as cur:
        cur.execute("SELECT name, watermark, job_id FROM refresh_state ORDER BY name")
        marks = [{"dag_id": n, "watermark": w.replace(tzinfo=UTC).isoformat(), "job_id": j}
                 for n, w, j in cur.fetchall()]
        cur.execute("SELECT day, refreshed_at, rewritten, job_id FROM refresh_days ORDER BY day DESC LIMIT %s",
                    (limit,))
        days = [{"day": d.isoformat(), "refreshed_at": t.replace(tzinfo=UTC).isoformat(), "rewritten": int(n),
                 "job_id": j} for d, t, n, j in cur.fetchall()]
    conn.commit()
    return {"watermarks": marks, "days": days}
