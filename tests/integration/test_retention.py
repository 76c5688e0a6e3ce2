"""Retention (issue 15) on the real MariaDB: which tracking rows a purge deletes, in chunks of what size,
and that an NDJSON file stays whole when the rows of its messages are gone.

Rows are written directly, each with the age and state the case needs (message_ts and updated_at
in the past), then tracking.purge_completed runs as es_message_retry's purge_tracking task does.
"""

import gzip
import json
import uuid
from dataclasses import replace

import pytest

import support
from es_export import pipeline, sink, tracking
from es_export.config import ExportConfig, Layout

pytestmark = pytest.mark.integration

DB = "tracking_test_retention"
DAYS = 90


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


def add_job(conn, *, status, hours_since_update=0):
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status,"
                    " updated_at) VALUES ('es_message_export', %s, '2024-01-01', '2024-01-02', '2024-01-02', %s,"
                    " NOW(6) - INTERVAL %s HOUR)", (f"run-{uuid.uuid4().hex[:8]}", status, hours_since_update))
        job_id = cur.lastrowid
    conn.commit()
    return job_id


def add_batch(conn, job_id, *, status="completed", lease_hours=None):
    with conn.cursor() as cur:
        cur.execute("INSERT INTO batch_progress (job_id, batch_no, status, lease_expires_at) VALUES"
                    " (%s, (SELECT COALESCE(MAX(b.batch_no) + 1, 0) FROM batch_progress b WHERE b.job_id = %s), %s,"
                    " IF(%s IS NULL, NULL, UTC_TIMESTAMP(6) + INTERVAL %s HOUR))",
                    (job_id, job_id, status, lease_hours, lease_hours or 0))
        batch_id = cur.lastrowid
    conn.commit()
    return batch_id


def add_messages(conn, label, n, *, days_old, status="completed", job_id=None, batch_id=None, updated_days_ago=None):
    """n rows whose message is `days_old` days old and which last changed `updated_days_ago` days ago."""
    updated = days_old if updated_days_ago is None else updated_days_ago
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO message_tracking (message_id, message_ts, status, job_id, batch_id, s3_key, updated_at)"
            " VALUES (%s, UTC_TIMESTAMP(6) - INTERVAL %s DAY - INTERVAL %s SECOND, %s, %s, %s, %s,"
            " NOW(6) - INTERVAL %s DAY)",
            [(f"{label}-{i:03d}", days_old, i, status, job_id, batch_id, f"p/{label}-{i:03d}.json", updated)
             for i in range(n)])
    conn.commit()


def remaining(conn):
    """Rows left, by the label of their message id."""
    with conn.cursor() as cur:
        cur.execute("SELECT SUBSTRING_INDEX(message_id, '-', 1) AS label, COUNT(*) FROM message_tracking"
                    " GROUP BY label ORDER BY label")
        left = dict(cur.fetchall())
    conn.commit()
    return left


def test_only_old_completed_rows_of_finished_work_go_in_chunks(conn):
    done = add_job(conn, status="completed")
    batch = add_batch(conn, done)
    add_messages(conn, "old", 25, days_old=200, job_id=done, batch_id=batch)
    add_messages(conn, "justover", 3, days_old=DAYS + 1, job_id=done, batch_id=batch)
    add_messages(conn, "recent", 5, days_old=10, job_id=done, batch_id=batch)
    add_messages(conn, "failed", 4, days_old=200, status="failed", job_id=done, batch_id=batch)
    add_messages(conn, "dead", 4, days_old=200, status="dead", job_id=done, batch_id=batch)
    add_messages(conn, "pending", 2, days_old=200, status="pending")
    add_messages(conn, "running", 2, days_old=200, status="running", job_id=done, batch_id=batch)
    # An old day exported again three days ago (a backfill, a reprocess): kept for the whole period.
    add_messages(conn, "reexported", 3, days_old=200, updated_days_ago=3, job_id=done, batch_id=batch)
    # A run still going on an old day.
    live = add_job(conn, status="running")
    add_messages(conn, "live", 3, days_old=200, job_id=live, batch_id=add_batch(conn, live))
    # A run Airflow ended long ago whose row still says running (its mirror update never arrived).
    stale = add_job(conn, status="running", hours_since_update=13)
    add_messages(conn, "stale", 2, days_old=200, job_id=stale, batch_id=add_batch(conn, stale, status="running",
                                                                                   lease_hours=-1))
    # A batch of a finished run that an attempt is running again (a person cleared its task).
    add_messages(conn, "rerun", 2, days_old=200, job_id=done, batch_id=add_batch(conn, done, status="running",
                                                                                 lease_hours=1))
    counting = support.CountingRows(conn, "DELETE FROM message_tracking")

    assert tracking.purge_completed(counting, DAYS, chunk_rows=10) == 25 + 3 + 2

    assert remaining(conn) == {"dead": 4, "failed": 4, "live": 3, "pending": 2, "recent": 5, "reexported": 3,
                               "rerun": 2, "running": 2}
    assert counting.counted and max(counting.counted) <= 10 and sum(counting.counted) == 30
    assert tracking.purge_completed(conn, DAYS, chunk_rows=10) == 0  # nothing left to purge


def test_a_purge_stops_at_max_rows_and_the_next_one_carries_on(conn):
    done = add_job(conn, status="completed")
    add_messages(conn, "old", 23, days_old=400, job_id=done, batch_id=add_batch(conn, done))
    add_messages(conn, "old2", 4, days_old=120, job_id=done, batch_id=add_batch(conn, done))
    counting = support.CountingRows(conn, "DELETE FROM message_tracking")
    assert tracking.purge_completed(counting, DAYS, chunk_rows=5, max_rows=12) == 12
    assert max(counting.counted) <= 5
    assert tracking.purge_completed(conn, DAYS, chunk_rows=5, max_rows=12) == 12
    assert tracking.purge_completed(conn, DAYS, chunk_rows=5, max_rows=12) == 3
    assert remaining(conn) == {}


def test_many_rows_at_one_timestamp_are_still_deleted_in_chunks(conn):
    done = add_job(conn, status="completed")
    batch = add_batch(conn, done)
    add_messages(conn, "same", 30, days_old=200, job_id=done, batch_id=batch)
    ((first,),) = support.query(DB, "SELECT MIN(message_ts) FROM message_tracking")
    with conn.cursor() as cur:
        cur.execute("UPDATE message_tracking SET message_ts = %s, updated_at = updated_at", (first,))
    conn.commit()
    counting = support.CountingRows(conn, "DELETE FROM message_tracking")
    assert tracking.purge_completed(counting, DAYS, chunk_rows=7) == 30
    assert max(counting.counted) <= 7 and len(counting.counted) >= 5


def test_the_retry_dag_task_follows_the_config(conn):
    done = add_job(conn, status="completed")
    add_messages(conn, "old", 3, days_old=40, job_id=done, batch_id=add_batch(conn, done))
    assert pipeline.purge_tracking(conn, ExportConfig()) == 0  # 90 days by default
    assert pipeline.purge_tracking(conn, ExportConfig(tracking_retention_days=0)) == 0
    assert pipeline.purge_tracking(conn, ExportConfig(tracking_retention_days=30)) == 3


def test_an_ndjson_file_keeps_the_documents_of_messages_retention_removed(conn, s3):
    """Rows gone, documents stay: rewriting a file for one superseded document keeps the others."""
    cfg = replace(ExportConfig(), bucket=f"retention-{uuid.uuid4().hex[:8]}", layout=Layout.NDJSON_GZIP)
    s3.create_bucket(Bucket=cfg.bucket)
    old_file = f"{cfg.prefix}/dt=2024-01-01/batch-1-0-a1-x.ndjson.gz"
    s3.put_object(Bucket=cfg.bucket, Key=old_file, Body=gzip.compress(b"".join(
        json.dumps({"message_id": m}).encode() + b"\n" for m in ("kept-a", "moved", "kept-b"))))
    # "moved" was exported again into another file; the rows of kept-a and kept-b were purged.
    add_messages(conn, "moved", 1, days_old=10)
    with conn.cursor() as cur:
        cur.execute("UPDATE message_tracking SET message_id = 'moved', s3_key = 'elsewhere.ndjson.gz'")
    conn.commit()
    assert pipeline.prune(conn, s3, cfg, [old_file]) == 1
    assert sink.document_ids(s3, cfg.bucket, old_file) == ["kept-a", "kept-b"]
