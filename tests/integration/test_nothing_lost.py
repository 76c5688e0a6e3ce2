"""Nothing lost, nothing stuck (issue 11), on the real stack: reruns and clears of NDJSON exports,
ids that differ only by trailing spaces, re-plans, poison batches, stalled and duplicate attempts,
lock timeouts, and messages whose timestamp moves to another day.

Each test drives the same core steps a DAG run does (open_job, extract, plan, process_batch,
reconcile) against Elasticsearch, MariaDB and the S3/SQS server, so it can set up the awkward
sequence exactly: the clear of a run is `open_job` again with the same run id, as Airflow's
retried `start_job` does.
"""

import json
import os
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import seed_data
import support
from es_export import pipeline, sink, tracking
from es_export.config import ExportConfig, Layout, RunParams
from es_export.errors import ConfigError, ReconcileError, StaleAttempt
from es_export.model import Batch, Outcome
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=120, days=4, start=date(2025, 3, 1), seed=5, large=0)
DB = "tracking_test_nothing_lost"


@pytest.fixture(scope="module")
def base(es, s3):
    with support.own_indices(es, SEED, "nl") as indices:
        cfg = ExportConfig(**indices, bucket=f"nothing-lost-{uuid.uuid4().hex[:8]}", scan_page_size=25,
                           retry_base_seconds=1)
        s3.create_bucket(Bucket=cfg.bucket)
        yield cfg


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


@pytest.fixture()
def cfg(base, s3):
    """The module's indices with a fresh prefix, so every test starts with an empty export."""
    return replace(base, prefix=f"t-{uuid.uuid4().hex[:6]}")


def day_params(day: date, **kw) -> RunParams:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return RunParams(start=start, end=start + timedelta(days=1), **kw)


def export(es, conn, s3, cfg, day, *, run_id=None, reprocess=False, batch_size=500):
    """One run of the day: the steps of es_message_export; returns (job, batches, report or error)."""
    params = day_params(day, reprocess=reprocess, batch_size=batch_size)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
                            params=params)
    pipeline.extract(es, conn, cfg, job)
    batches = pipeline.plan(conn, cfg, job, params)
    for batch in batches:
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    try:
        return job, batches, pipeline.reconcile(es, conn, s3, cfg, job)
    except ReconcileError as exc:
        return job, batches, exc


def documents(s3, cfg, day) -> dict[str, list[str]]:
    """Every document S3 holds for the day: key -> message ids in it."""
    return {key: sink.document_ids(s3, cfg.bucket, key)
            for key in sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day))}


def assert_s3_matches_tracking(conn, s3, cfg, day):
    """Each completed message's document is in the object its s3_key names, once; nothing else is in S3."""
    with conn.cursor() as cur:
        cur.execute("SELECT message_id, s3_key FROM message_tracking WHERE status = 'completed'"
                    " AND message_ts >= %s AND message_ts < %s", (day, day + timedelta(days=1)))
        tracked = dict(cur.fetchall())
    conn.commit()
    held = documents(s3, cfg, day)
    in_s3 = [(mid, key) for key, ids in held.items() for mid in ids]
    assert sorted(in_s3) == sorted(tracked.items())
    assert all(held.values()), "an object holds no document"
    return held


def late_message(es, cfg, day, message_id):
    ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    es.index(index=cfg.messages_index, id=message_id, document={"timestamp": ts, "body": "late"}, refresh=True)


# ---------------------------------------------------------------------------- 1. NDJSON reruns


def test_ndjson_clear_rerun_reprocess_and_batch_clear_lose_no_document(es, conn, s3, cfg):
    cfg = replace(cfg, layout=Layout.NDJSON_GZIP)
    day = SEED.start
    n = len(list(seed_data.ids_for_day(SEED, day)))
    job, _, report = export(es, conn, s3, cfg, day)
    assert report.documents == report.documents_expected == n
    assert [len(ids) for ids in assert_s3_matches_tracking(conn, s3, cfg, day).values()] == [n]

    # A late message arrives; the operator clears the run (same run id, same job_runs row).
    late = f"late-{uuid.uuid4().hex[:6]}"
    late_message(es, cfg, day, late)
    try:
        again, batches, report = export(es, conn, s3, cfg, day, run_id=job.run_id)
        assert again.job_id == job.job_id
        assert [b.size for b in batches] == [1]  # only the late message, in a batch of its own
        assert report.documents == report.documents_expected == n + 1
        held = assert_s3_matches_tracking(conn, s3, cfg, day)
        assert sorted(len(ids) for ids in held.values()) == [1, n]

        # reprocess=true in a new run: everything in one new file, the two old ones removed.
        _, _, report = export(es, conn, s3, cfg, day, reprocess=True)
        assert report.status == "completed" and report.documents_superseded == 0
        assert [len(ids) for ids in assert_s3_matches_tracking(conn, s3, cfg, day).values()] == [n + 1]

        # A person clears the single batch of that run: a new file, the old one removed.
        with conn.cursor() as cur:
            cur.execute("SELECT MAX(id) FROM batch_progress")
            batch_id = cur.fetchone()[0]
            cur.execute("SELECT job_id, batch_no, total FROM batch_progress WHERE id = %s", (batch_id,))
            job_id, batch_no, total = cur.fetchone()
        before = set(documents(s3, cfg, day))
        tracking.reopen_batch(conn, batch_id)
        pipeline.process_batch(es, conn, s3, cfg, Batch(job_id, batch_id, batch_no, total), run_id="clear")
        after = assert_s3_matches_tracking(conn, s3, cfg, day)
        assert len(after) == 1 and set(after).isdisjoint(before)
    finally:
        es.delete(index=cfg.messages_index, id=late, refresh=True)


def test_reconcile_counts_documents_not_files(es, conn, s3, cfg):
    cfg = replace(cfg, layout=Layout.NDJSON_GZIP)
    day = SEED.start + timedelta(days=1)
    job, _, report = export(es, conn, s3, cfg, day)
    assert report.status == "completed"
    # One file loses a document behind the package's back: same number of files, one document short.
    (key,) = documents(s3, cfg, day)
    body = sink._read(s3, cfg.bucket, key)
    s3.put_object(Bucket=cfg.bucket, Key=key, Body=__import__("gzip").compress(b"\n".join(body.splitlines()[1:])))
    with pytest.raises(ReconcileError, match="1 completed message\\(s\\) are missing from the object"):
        pipeline.reconcile(es, conn, s3, cfg, job)


# ---------------------------------------------------------------------------- 2. trailing spaces


def test_ids_differing_only_by_trailing_spaces_are_three_messages(es, conn, s3, cfg, monkeypatch):
    day = SEED.start + timedelta(days=2)
    ids = ["pad", "pad ", "pad  "]
    # The table as an earlier version created it, holding 'pad' already: the migration fixes it in place.
    support.reset_database(DB)
    old = support.connect(DB)
    monkeypatch.setattr(tracking.schema, "MIGRATIONS", [m for m in tracking.MIGRATIONS if m[0] <= 4])
    tracking.migrate(old)
    with old.cursor() as cur:
        cur.execute("INSERT INTO message_tracking (message_id, message_ts) VALUES ('pad', %s)", (day,))
    old.commit()
    monkeypatch.undo()
    assert tracking.migrate(old) == [v for v, _, _ in tracking.MIGRATIONS if v > 4]
    old.close()
    for mid in ids:
        late_message(es, cfg, day, mid)
    try:
        conn = support.connect(DB)
        _, _, report = export(es, conn, s3, cfg, day)
        assert report.status == "completed", report.problems
        rows = support.query(DB, "SELECT message_id, status FROM message_tracking WHERE message_id LIKE 'pad%%'")
        assert sorted(rows) == [(i, "completed") for i in ids]
        keys = set(documents(s3, cfg, day))
        assert {sink.object_key(cfg.prefix, day, i) for i in ids} <= keys
        conn.close()
    finally:
        for mid in ids:
            es.delete(index=cfg.messages_index, id=mid, refresh=True)


# ---------------------------------------------------------------------------- 3. re-planning


def test_a_rerun_plans_only_what_is_left_and_never_more_than_max_batches(es, conn, s3, cfg):
    day = SEED.start + timedelta(days=3)
    n = len(list(seed_data.ids_for_day(SEED, day)))
    job, batches, report = export(es, conn, s3, cfg, day, batch_size=5)
    assert len(batches) == -(-n // 5) and report.status == "completed"
    # The run is cleared: nothing is left to export, so nothing is mapped.
    _, batches, report = export(es, conn, s3, cfg, day, run_id=job.run_id, batch_size=5)
    assert batches == [] and report.status == "completed"
    # reprocess with a tiny max_batches: the plan fits, whatever the job held before.
    small = replace(cfg, max_batches=2)
    _, batches, report = export(es, conn, s3, small, day, reprocess=True, batch_size=5)
    assert len(batches) == 2 and sum(b.size for b in batches) == n
    # And a plan that cannot fit is refused before anything is mapped.
    tiny = replace(cfg, max_batches=2, max_batch_size=5)
    params = day_params(day, reprocess=True, batch_size=5)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="too-big", params=params)
    pipeline.extract(es, conn, tiny, job)
    with pytest.raises(ConfigError, match=f"{n} messages do not fit in max_batches=2 batches of at most "
                                          "max_batch_size=5"):
        pipeline.plan(conn, tiny, job, params)


# ---------------------------------------------------------------------------- 4. poison batches


class ChokesOnOneMessage:
    """The real client, except that reading one message's related documents fails, as a related
    document the code cannot handle did (an array message_id raised TypeError before arrays were
    understood): the failure comes with every request that includes that message."""

    def __init__(self, es, poisoned):
        self._es, self.poisoned = es, poisoned

    def msearch(self, **kw):
        if self.poisoned in json.dumps(kw["searches"]):
            raise TypeError(f"unhashable type: 'list' (a related document of {self.poisoned!r})")
        return self._es.msearch(**kw)

    def __getattr__(self, name):
        return getattr(self._es, name)


def test_a_poison_message_is_isolated_and_a_failing_batch_spends_attempts(es, conn, s3, cfg):
    day = SEED.start
    cfg = replace(cfg, max_attempts=2)
    ids = sorted(seed_data.ids_for_day(SEED, day))
    poisoned = ids[3]
    job, batches, report = export(ChokesOnOneMessage(es, poisoned), conn, s3, cfg, day)
    assert len(batches) == 1
    assert isinstance(report, ReconcileError)
    rows = support.query(DB, "SELECT message_id, status, attempts, last_error FROM message_tracking"
                             " WHERE status <> 'completed'")
    assert [(r[0], r[1], r[2]) for r in rows] == [(poisoned, "failed", 1)]
    assert "TypeError" in rows[0][3] and "unhashable" in rows[0][3]
    assert len(documents(s3, cfg, day)) == len(ids) - 1

    # A whole-batch failure (a related index deleted) spends an attempt of every message in it:
    # after max_attempts the message is dead instead of being taken again for ever.
    time.sleep(1.2)
    retry = pipeline.open_job(conn, dag_id="es_message_retry", run_id=f"retry-{uuid.uuid4().hex[:6]}",
                              params=day_params(day))
    (batch,) = pipeline.plan_retry(conn, replace(cfg, audit_index="no-such-index"), retry, batch_size=100)
    with pytest.raises(Exception, match="does not exist"):
        pipeline.process_batch(es, conn, s3, replace(cfg, audit_index="no-such-index"), batch, run_id=retry.run_id)
    summary = pipeline.summarize_retry(conn, retry)
    assert (summary.dead, summary.dead_messages[0]["message_id"]) == (1, poisoned)
    assert "batch failed: SourceError" in summary.dead_messages[0]["error"]


# ---------------------------------------------------------------------------- 5. and 6. stalled and twice-run


class BlocksFirstPut:
    """The real S3 client; the first put waits until the test lets it go (a slow attempt)."""

    def __init__(self, s3):
        self._s3, self.started, self.release = s3, threading.Event(), threading.Event()

    def put_object(self, **kw):
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(60)
        return self._s3.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self._s3, name)


@pytest.mark.parametrize("layout", list(Layout), ids=lambda layout: layout.value)
def test_two_attempts_of_one_batch_at_once_count_each_message_once(es, conn, s3, cfg, layout):
    cfg = replace(cfg, layout=layout, upload_concurrency=1)
    day = SEED.start + timedelta(days=1)
    params = day_params(day)
    job, batch = support.one_batch(es, conn, cfg, params, run_id=f"twice-{uuid.uuid4().hex[:6]}")
    slow = BlocksFirstPut(s3)
    errors = []

    def first_attempt():
        c = support.connect(DB)
        try:
            pipeline.process_batch(es, c, slow, cfg, batch, run_id=job.run_id)
        except StaleAttempt as exc:
            errors.append(exc)
        finally:
            c.close()

    thread = threading.Thread(target=first_attempt)
    thread.start()
    assert slow.started.wait(30)
    # Meanwhile the queue delivers the batch again (or Airflow re-invokes after a read timeout).
    second = pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    slow.release.set()
    thread.join(60)
    assert second.completed == batch.size
    assert len(errors) == 1 and "attempt 1's results are discarded" in str(errors[0])
    # attempts counts failures since the last export: none here.
    assert support.query(DB, "SELECT status, attempts, COUNT(*) FROM message_tracking GROUP BY status, attempts") == (
        ("completed", 0, batch.size),)
    assert support.query(DB, "SELECT status, attempts, completed FROM batch_progress") == (
        ("completed", 2, batch.size),)
    assert_s3_matches_tracking(conn, s3, cfg, day)
    assert pipeline.reconcile(es, conn, s3, cfg, job).status == "completed"


def test_a_stalled_lambda_is_detected_by_its_lease_and_its_late_writes_refused(es, conn, s3, cfg):
    day = SEED.start + timedelta(days=2)
    params = day_params(day)
    job, batch = support.one_batch(es, conn, cfg, params, run_id=f"stall-{uuid.uuid4().hex[:6]}")
    # Queued, and no Lambda ever starts it (a stale secret): stalled once the dispatch lease ends.
    tracking.mark_dispatched(conn, [batch.batch_id], lease_seconds=1)
    assert tracking.expire_stalled_batch(conn, batch.batch_id) is None
    time.sleep(1.2)
    reason = tracking.expire_stalled_batch(conn, batch.batch_id, policy=cfg.retry_policy())
    assert reason and reason.startswith("stalled: the batch was still pending")
    assert support.query(DB, "SELECT status, attempts, COUNT(*) FROM message_tracking GROUP BY status, attempts") == (
        ("failed", 1, batch.size),)
    state = tracking.batch_state(conn, batch.batch_id)
    assert (state["status"], state["dispatched_at"]) == ("failed", None)  # the task's retry queues it again
    # A Lambda starts it and times out: the lease it took (its remaining time) runs out.
    zombie = tracking.start_batch(conn, batch.batch_id, lease_seconds=1)
    time.sleep(1.2)
    assert tracking.expire_stalled_batch(conn, batch.batch_id, policy=cfg.retry_policy()).startswith(
        "stalled: the batch was still running")
    done = [Outcome(m.row_id, m.message_id, True, s3_key="x") for m in zombie.messages]
    with pytest.raises(StaleAttempt):
        tracking.record_outcomes(conn, zombie, done)
    assert support.query(DB, "SELECT status, attempts, COUNT(*) FROM message_tracking GROUP BY status, attempts") == (
        ("failed", 2, batch.size),)
    # es_message_retry takes them once their backoff is over.
    time.sleep(2.2)
    retry = pipeline.open_job(conn, dag_id="es_message_retry", run_id=f"retry-{uuid.uuid4().hex[:6]}", params=params)
    (again,) = pipeline.plan_retry(conn, cfg, retry, batch_size=1000)
    assert pipeline.process_batch(es, conn, s3, cfg, again, run_id=retry.run_id).completed == batch.size


def test_messages_left_pending_by_a_dead_run_go_to_the_retry_dag(es, conn, s3, cfg):
    day = SEED.start + timedelta(days=3)
    params = day_params(day)
    job, batch = support.one_batch(es, conn, cfg, params, run_id=f"dead-{uuid.uuid4().hex[:6]}")
    retry = pipeline.open_job(conn, dag_id="es_message_retry", run_id=f"retry-{uuid.uuid4().hex[:6]}", params=params)
    assert pipeline.plan_retry(conn, cfg, retry, batch_size=1000) == []  # the run is alive: its messages are its own
    tracking.update_job(conn, job.job_id, status="failed")  # Airflow failed the run (the listener's mirror)
    retry = pipeline.open_job(conn, dag_id="es_message_retry", run_id=f"retry-{uuid.uuid4().hex[:6]}", params=params)
    (again,) = pipeline.plan_retry(conn, cfg, retry, batch_size=1000)
    assert again.size == batch.size


class SlowLambda(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(4)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_a_lambda_invoke_that_times_out_is_not_sent_twice(monkeypatch):
    from es_export_airflow import dispatch

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowLambda)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    conn.setdefault("extra", {})["service_config"] = {"lambda": {"endpoint_url": f"http://127.0.0.1:{server.server_port}"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    monkeypatch.setattr(dispatch, "LAMBDA_READ_MARGIN_SECONDS", 0)
    monkeypatch.setattr(dispatch, "payload", lambda cfg, batch: {"batch": batch})
    try:
        with pytest.raises(Exception, match="(?i)read timeout"):
            dispatch.invoke_lambda(ExportConfig(lambda_timeout_seconds=1), {"batch_no": 0})
        time.sleep(4)
        assert SlowLambda.calls == 1
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------- 9. lock timeouts


class LocksARowOnFirstPut:
    """Another transaction holds a lock on one of the batch's rows while the batch writes its outcomes."""

    def __init__(self, s3, row_id):
        self._s3, self.row_id, self.holder, self.once = s3, row_id, None, threading.Lock()

    def put_object(self, **kw):
        with self.once:  # uploads run in threads: exactly one of them takes the lock
            if self.holder is None:
                self.holder = support.connect(DB)
                with self.holder.cursor() as cur:
                    cur.execute("SELECT id FROM message_tracking WHERE id = %s FOR UPDATE", (self.row_id,))
                threading.Timer(2.5, self.holder.close).start()  # closing releases the lock
        return self._s3.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self._s3, name)


def test_lock_wait_timeouts_are_retried_not_turned_into_failures(es, conn, s3, cfg):
    day = SEED.start
    params = day_params(day)
    job, batch = support.one_batch(es, conn, cfg, params, run_id=f"lock-{uuid.uuid4().hex[:6]}")
    with conn.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cur.execute("SELECT MIN(id) FROM message_tracking WHERE batch_id = %s", (batch.batch_id,))
        row_id = cur.fetchone()[0]
    locking = LocksARowOnFirstPut(s3, row_id)
    result = pipeline.process_batch(es, conn, locking, cfg, batch, run_id=job.run_id)
    assert (result.completed, result.failed) == (batch.size, 0)
    assert support.query(DB, "SELECT status, COUNT(*) FROM message_tracking GROUP BY status") == (
        ("completed", batch.size),)


# ---------------------------------------------------------------------------- 10. a message changes day


def test_a_message_whose_timestamp_moves_is_rehomed_to_its_new_day(es, conn, s3, cfg):
    day, next_day = SEED.start + timedelta(days=1), SEED.start + timedelta(days=2)
    moved = sorted(seed_data.ids_for_day(SEED, day))[0]
    original = es.get(index=cfg.messages_index, id=moved)["_source"]
    _, _, report = export(es, conn, s3, cfg, day)
    assert report.status == "completed"
    old_key = sink.object_key(cfg.prefix, day, moved)
    assert old_key in documents(s3, cfg, day)
    es.index(index=cfg.messages_index, id=moved, document={**original, "timestamp": "2025-03-03T08:00:00Z"},
             refresh=True)
    try:
        _, _, report = export(es, conn, s3, cfg, next_day)
        assert report.status == "completed", report
        assert sink.object_key(cfg.prefix, next_day, moved) in documents(s3, cfg, next_day)
        assert old_key not in documents(s3, cfg, day)  # the superseded object is gone
        assert support.query(DB, "SELECT status, DATE(message_ts) FROM message_tracking WHERE message_id = %s",
                             moved) == (("completed", next_day),)
        # The old day, run again, is consistent without it.
        _, _, report = export(es, conn, s3, cfg, day)
        assert report.status == "completed" and report.objects == report.es_count
        assert_s3_matches_tracking(conn, s3, cfg, day)
    finally:
        es.index(index=cfg.messages_index, id=moved, document=original, refresh=True)
