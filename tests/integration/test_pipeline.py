"""Core pipeline steps on the real stack, for cases a DAG run cannot set up: bad input."""

import os
import time
import urllib.request
import uuid
from datetime import UTC, date, datetime

import pytest

import seed_data
from es_export import pipeline, search, tracking
from es_export.config import ExportConfig, RunParams
from es_export.errors import SourceError
from seed_data import SeedConfig
from support import CountingRows, connect, own_indices, reset_database

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=200, days=1, start=date(2024, 11, 5), seed=23, large=0)
DB = "tracking_test_pipeline"


@pytest.fixture(scope="module")
def cfg(es, s3):
    with own_indices(es, SEED, "p") as indices:
        config = ExportConfig(**indices, bucket=f"pipeline-{uuid.uuid4().hex[:8]}", scan_page_size=50,
                              retry_base_seconds=1)
        s3.create_bucket(Bucket=config.bucket)
        yield config


@pytest.fixture()
def conn():
    reset_database(DB)
    c = connect(DB)
    yield c
    c.close()


def params(**kw):
    return RunParams(start=datetime(2024, 11, 5, tzinfo=UTC), end=datetime(2024, 11, 6, tzinfo=UTC), **kw)


def test_migrations_are_versioned_and_idempotent(conn):
    versions = [v for v, _, _ in tracking.MIGRATIONS]
    assert tracking.migrate(conn) == versions
    assert tracking.migrate(conn) == []
    assert tracking.schema_version(conn) == max(versions) >= 2


def batch_index_columns(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.statistics WHERE table_schema = DATABASE()"
                    " AND table_name = 'message_tracking' AND index_name = 'ix_message_tracking_batch'"
                    " ORDER BY seq_in_index")
        return [r[0] for r in cur.fetchall()]


def test_the_batch_index_leaves_the_status_out_and_its_migration_runs_again(conn):
    tracking.migrate(conn)
    assert batch_index_columns(conn) == ["batch_id"]  # a status change moves no entry of it
    with conn.cursor() as cur:  # a migration interrupted after its ALTER and before it was recorded
        cur.execute("DELETE FROM schema_version WHERE version = 13")
    conn.commit()
    assert tracking.migrate(conn) == [13]
    assert batch_index_columns(conn) == ["batch_id"]


def test_the_claim_writes_none_of_the_rows_its_own_extract_tracked(es, conn, cfg):
    job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex}", params=params())
    found = pipeline.extract(es, conn, cfg, job)
    claims = CountingRows(conn, "UPDATE message_tracking FORCE INDEX (ix_message_tracking_ts) SET job_id")
    assert tracking.claim_for_job(claims, job, reprocess=False) == found.ids_found == SEED.messages
    assert claims.counted and sum(claims.counted) == 0  # each row is already the job's: none written again
    assert support_query(conn, "SELECT COUNT(*) FROM message_tracking WHERE job_id = %s AND batch_id IS NULL",
                         job.job_id) == found.ids_found


def support_query(conn, sql: str, *args) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        value = int(cur.fetchone()[0])
    conn.commit()
    return value


def put_raw(index: str, doc_id: str, body: bytes, method: str = "PUT") -> None:
    """A document sent as these exact bytes (the Python clients would write a float beyond range as Infinity)."""
    url = f"{os.environ['ES_URL'].rstrip('/')}/{index}/_doc/{doc_id}?refresh=true"
    request = urllib.request.Request(url, data=body or None, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as resp:
        assert resp.status in (200, 201)


def test_a_number_beyond_double_range_fails_its_message_alone(es, conn, s3, cfg):
    """A related document holding 1.5e400 (in an object the mapping does not index, so the cluster keeps it):
    the package's client refuses to read it as inf, and only that message fails, with the reason."""
    client = search.connect(search.SearchSettings(os.environ["ES_URL"]))
    bad = seed_data.message_id(SEED, 7)
    es.indices.put_mapping(index=cfg.history_index, properties={"opaque": {"type": "object", "enabled": False}})
    put_raw(cfg.history_index, "out-of-range", f'{{"message_id": "{bad}", "opaque": {{"v": 1.5e400}}}}'.encode())
    try:
        job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex}", params=params(batch_size=1000))
        pipeline.extract(client, conn, cfg, job)
        (batch,) = pipeline.plan(conn, cfg, job, params(batch_size=1000))
        result = pipeline.process_batch(client, conn, s3, cfg, batch, run_id=job.run_id)
    finally:
        put_raw(cfg.history_index, "out-of-range", b"", method="DELETE")
    assert (result.completed, result.failed) == (SEED.messages - 1, 1)
    with conn.cursor() as cur:
        cur.execute("SELECT status, last_error FROM message_tracking WHERE message_id = %s", (bad,))
        status, error = cur.fetchone()
    assert status == "failed" and "cannot be read exactly as JSON: Number out of range" in error
    assert "1.5e400" not in error  # the answer's body is never printed


def test_a_message_gone_from_elasticsearch_fails_alone(es, conn, s3, cfg):
    job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex}", params=params(batch_size=1000))
    found = pipeline.extract(es, conn, cfg, job)
    assert found.ids_found == SEED.messages
    (batch,) = pipeline.plan(conn, cfg, job, params(batch_size=1000))
    gone = seed_data.message_id(SEED, 5)
    es.delete(index=cfg.messages_index, id=gone, refresh=True)
    try:
        result = pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    finally:
        es.index(index=cfg.messages_index, id=gone, document={"timestamp": "2024-11-05T00:00:00Z"}, refresh=True)
    assert (result.completed, result.failed) == (SEED.messages - 1, 1)
    with conn.cursor() as cur:
        cur.execute("SELECT status, last_error FROM message_tracking WHERE message_id = %s", (gone,))
        status, error = cur.fetchone()
    assert status == "failed" and f"message {gone!r} is no longer in index" in error
    # The batch is finished: delivering it again (a queue delivering twice) changes nothing...
    again = pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    assert (again.attempted, again.completed, again.failed) == (0, 0, 0)
    # ...while a retry job takes the failed message alone once its backoff passed, and now it exists again.
    time.sleep(1.2)
    retry = pipeline.open_job(conn, dag_id="retry", run_id=f"r-{uuid.uuid4().hex}", params=params())
    (retry_batch,) = pipeline.plan_retry(conn, cfg, retry, batch_size=100)
    result = pipeline.process_batch(es, conn, s3, cfg, retry_batch, run_id=retry.run_id)
    assert (result.attempted, result.completed, result.failed) == (1, 1, 0)


def test_index_without_the_timestamp_field_gives_a_clear_error(es, conn, cfg):
    index = f"no-ts-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings={"properties": {"created": {"type": "date"}}})
    try:
        bad = ExportConfig(messages_index=index, bucket=cfg.bucket)
        job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex}", params=params())
        with pytest.raises(SourceError, match=f"index '{index}' has no field 'timestamp' in its mapping"):
            pipeline.extract(es, conn, bad, job)
    finally:
        es.indices.delete(index=index)


def test_missing_index_gives_a_clear_error(es, conn, cfg):
    job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex}", params=params())
    with pytest.raises(SourceError, match="index 'no-such-index' does not exist"):
        pipeline.extract(es, conn, ExportConfig(messages_index="no-such-index"), job)
