"""Faults on the real stack: every message of the interval ends on S3 exactly once, tracking consistent.

Scenarios: S3 unreachable during a run (recovered by es_message_retry), a message missing from
Elasticsearch (dead after its last attempt, alert sent, revived), the process of a batch killed with
SIGKILL (recovered by the task's retry), a point-in-time that expires mid-scan and an extract that
crashes mid-scan (resumed from its checkpoint).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from elastic_transport import ConnectionError as TransportConnectionError

import seed_data
import support
from es_export import pipeline, sink, tracking
from es_export.config import ExportConfig, RunParams
from seed_data import SeedConfig
from support import (
    ROOT,
    config_changed,
    connect,
    new_tracking_database,
    one_batch,
    point_airflow_at,
    run_dag,
    s3_keys,
    sns_messages,
)

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=240, days=6, start=date(2024, 12, 1), seed=31, large=0)
DB = "tracking_test_failures"
PREFIX = "messages"


@pytest.fixture(scope="module")
def env(es, s3, airflow_db, module_monkeypatch):
    with support.own_indices(es, SEED, "f") as indices:
        cfg = {**indices, "bucket": f"failures-{uuid.uuid4().hex[:8]}", "prefix": PREFIX, "scan_page_size": 10,
               "insert_chunk_size": 10, "retry_base_seconds": 1, "max_attempts": 5}
        s3.create_bucket(Bucket=cfg["bucket"])
        new_tracking_database(DB).close()
        point_airflow_at(module_monkeypatch, cfg, DB)
        yield cfg


def day_conf(day):
    return {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}


def keys_of_day(s3, bucket, day):
    return s3_keys(s3, bucket, sink.day_prefix(PREFIX, day))


def assert_day_exported_exactly_once(s3, cfg, day):
    expected = sorted(sink.object_key(PREFIX, day, i) for i in seed_data.ids_for_day(SEED, day))
    assert sorted(keys_of_day(s3, cfg["bucket"], day)) == expected
    conn = connect(DB)
    with conn.cursor() as cur:
        cur.execute("SELECT status, COUNT(*) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s"
                    " GROUP BY status", (day, day + timedelta(days=1)))
        assert dict(cur.fetchall()) == {"completed": len(expected)}
        cur.execute("SELECT COUNT(*) - COUNT(DISTINCT message_id) FROM message_tracking")
        assert cur.fetchone()[0] == 0
    conn.close()


def query(sql, *params):
    return support.query(DB, sql, *params)


def test_s3_unreachable_then_the_retry_dag_recovers(env, s3):
    day = SEED.start
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({**json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"]),
                                                          "extra": {"region_name": "us-east-1",
                                                                    "endpoint_url": "http://127.0.0.1:9"}}))
        dr = run_dag("es_message_export", **day_conf(day))
    assert dr.state == "failed"
    rows = query("SELECT status, COUNT(*), MIN(last_error) FROM message_tracking GROUP BY status")
    assert [(r[0], r[1]) for r in rows] == [("failed", len(list(seed_data.ids_for_day(SEED, day))))]
    assert "S3 upload of" in rows[0][2]
    assert keys_of_day(s3, env["bucket"], day) == []
    time.sleep(1.5)  # the backoff of a first failure is retry_base_seconds
    retry = run_dag("es_message_retry")
    assert retry.state == "success"
    assert_day_exported_exactly_once(s3, env, day)


def test_missing_message_goes_dead_alerts_and_is_revived(env, es, s3, alert_queue):
    topic, sqs, queue_url = alert_queue
    day = SEED.start + timedelta(days=1)
    with config_changed(env, max_attempts=2, sns_topic_arn=topic):
        gone = next(i for i in seed_data.ids_for_day(SEED, day) if "'" in i or "/" in i)
        source = es.get(index=env["messages_index"], id=gone)["_source"]
        # The id was tracked by an earlier extract, then vanished from Elasticsearch: only it fails.
        conn = connect(DB)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO message_tracking (message_id, message_ts) VALUES (%s, %s)",
                        (gone, datetime.fromisoformat(source["timestamp"].replace("Z", "+00:00")).replace(tzinfo=None)))
        conn.commit()
        conn.close()
        es.delete(index=env["messages_index"], id=gone, refresh=True)
        try:
            dr = run_dag("es_message_export", **day_conf(day))
            assert dr.state == "failed"
            assert query("SELECT status, last_error FROM message_tracking WHERE message_id = %s", gone) == (
                ("failed", f"message {gone!r} is no longer in index {env['messages_index']!r}"),)
            # A second attempt (its last) fails too: the message is dead, the retry run is red, alerts go out.
            time.sleep(1.5)
            assert run_dag("es_message_retry").state == "failed"
            assert query("SELECT status, attempts FROM message_tracking WHERE message_id = %s", gone) == (("dead", 2),)
            # The failed export run (see test_run_alerts.py), the dead message, and the failed retry run.
            alerts = {m["Subject"]: m["Message"] for m in sns_messages(sqs, queue_url)}
            assert sorted(alerts) == ["es_message_export: dead messages", "es_message_export: run failed",
                                      "es_message_retry: run failed"]
            dead = alerts["es_message_export: dead messages"]
            assert repr(gone) in dead and "dead after 2 attempts" in dead
            # Nothing picks up a dead message by itself...
            time.sleep(1.5)
            assert run_dag("es_message_retry").state == "success"
            assert query("SELECT status FROM message_tracking WHERE message_id = %s", gone) == (("dead",),)
        finally:
            es.index(index=env["messages_index"], id=gone, document=source, refresh=True)
    # ...until an operator revives it once the cause is fixed.
    assert run_dag("es_message_retry", revive_dead=True).state == "success"
    assert_day_exported_exactly_once(s3, env, day)


def test_a_message_dead_in_the_export_run_itself_alerts_from_reconcile(env, es, s3, alert_queue):
    topic, sqs, queue_url = alert_queue
    day = SEED.start + timedelta(days=1)
    with config_changed(env, max_attempts=1, sns_topic_arn=topic):
        gone = sorted(seed_data.ids_for_day(SEED, day))[-1]
        source = es.get(index=env["messages_index"], id=gone)["_source"]
        with connect(DB) as conn, conn.cursor() as cur:
            cur.execute("UPDATE message_tracking SET status = 'pending', attempts = 0 WHERE message_id = %s", (gone,))
            conn.commit()
        es.delete(index=env["messages_index"], id=gone, refresh=True)
        try:
            assert run_dag("es_message_export", **day_conf(day)).state == "failed"
            assert query("SELECT status, attempts FROM message_tracking WHERE message_id = %s", gone) == (("dead", 1),)
            alerts = {m["Subject"]: m["Message"] for m in sns_messages(sqs, queue_url)}
            assert sorted(alerts) == ["es_message_export: dead messages", "es_message_export: run failed"]
            assert repr(gone) in alerts["es_message_export: dead messages"]
            assert "dead after 1 attempts" in alerts["es_message_export: dead messages"]
            assert repr(gone) in alerts["es_message_export: run failed"]
        finally:
            es.index(index=env["messages_index"], id=gone, document=source, refresh=True)
    assert run_dag("es_message_retry", revive_dead=True).state == "success"
    assert_day_exported_exactly_once(s3, env, day)


KILLER = """
import os, signal, sys, boto3, pymysql
from elasticsearch import Elasticsearch
from es_export import pipeline
from es_export.config import ExportConfig
from es_export.model import Batch
cfg = ExportConfig(**{k: v for k, v in __import__("json").loads(sys.argv[1]).items()})
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
puts = 0
class DiesMidBatch:
    def put_object(self, **kw):
        global puts
        puts += 1
        if puts > 10:
            os.kill(os.getpid(), signal.SIGKILL)
        return s3.put_object(**kw)
conn = pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]), user=os.environ["MYSQL_USER"],
                       password=os.environ["MYSQL_PASSWORD"], database=sys.argv[3], charset="utf8mb4")
pipeline.process_batch(Elasticsearch(os.environ["ES_URL"]), conn, DiesMidBatch(), cfg,
                       Batch.from_dict(__import__("json").loads(sys.argv[2])), run_id="killed")
"""


def export_config(env, **changes):
    keep = {k: v for k, v in env.items()}
    return ExportConfig(**{**keep, "upload_concurrency": 1, **changes})


def params_for(day):
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return RunParams(start=start, end=start + timedelta(days=1), batch_size=1000)


def one_batch_of_day(es, conn, cfg, day):
    """One batch with the whole day, as its run leaves it for its single mapped task."""
    return one_batch(es, conn, cfg, params_for(day), run_id=f"run-{uuid.uuid4().hex[:8]}")


def test_batch_process_killed_with_sigkill_is_finished_by_the_task_retry(env, es, s3):
    day = SEED.start + timedelta(days=2)
    cfg = export_config(env)
    conn = connect(DB)
    job, batch = one_batch_of_day(es, conn, cfg, day)
    child = subprocess.run([sys.executable, "-c", KILLER, json.dumps({**env, "upload_concurrency": 1}),
                            json.dumps(batch.as_dict()), DB], env={**os.environ, "PYTHONPATH": str(ROOT / "include")},
                           capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(keys_of_day(s3, env["bucket"], day)) == 10
    # Another job cannot take the messages while the dead worker's lease runs...
    other = pipeline.open_job(conn, dag_id="es_message_export", run_id=f"other-{uuid.uuid4().hex[:6]}",
                              params=params_for(day))
    assert tracking.claim_for_job(conn, other, reprocess=False) == 0
    # ...but the retry of the same batch (what Airflow does after the task died) takes them back.
    result = pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    assert (result.attempted, result.failed) == (batch.size, 0)
    conn.close()
    assert_day_exported_exactly_once(s3, env, day)


class CountsPages:
    """The real client, counting the search pages it serves; subclasses add one fault."""

    def __init__(self, es):
        self._es, self.pages = es, 0

    def search(self, **kw):
        self.pages += 1
        return self._es.search(**kw)

    def __getattr__(self, name):
        return getattr(self._es, name)


class ClosesPitAfterFirstPage(CountsPages):
    """The point-in-time disappears after the first page, as an expired one does."""

    def search(self, **kw):
        if self.pages == 1:
            self._es.close_point_in_time(id=kw["pit"]["id"])
        return super().search(**kw)


class CrashesAfterThreePages(CountsPages):
    def search(self, **kw):
        self.pages += 1
        if self.pages > 3:
            raise TransportConnectionError("connection reset by peer (simulated crash of the node)")
        return self._es.search(**kw)


def count_day(es, env, day):
    return es.count(index=env["messages_index"], query={"range": {"timestamp": {
        "gte": day.isoformat(), "lt": (day + timedelta(days=1)).isoformat()}}})["count"]


def abandon(conn, job):
    """The run ends without its reconcile: Airflow marks it failed and the listener mirrors that."""
    tracking.update_job(conn, job.job_id, status="failed")


def test_expired_point_in_time_is_reopened_from_the_checkpoint(env, es):
    day = SEED.start + timedelta(days=3)
    conn = connect(DB)
    job = pipeline.open_job(conn, dag_id="t", run_id=f"pit-{uuid.uuid4().hex[:6]}", params=params_for(day))
    result = pipeline.extract(ClosesPitAfterFirstPage(es), conn, export_config(env), job)
    abandon(conn, job)
    conn.close()
    assert result.reopened == 1
    assert result.ids_found == count_day(es, env, day) > 20
    assert query("SELECT COUNT(*) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s",
                 day, day + timedelta(days=1)) == ((result.ids_found,),)


def test_crashed_extract_resumes_where_it_stopped(env, es):
    day = SEED.start + timedelta(days=3)
    conn = connect(DB)
    job = pipeline.open_job(conn, dag_id="t", run_id=f"crash-{uuid.uuid4().hex[:6]}", params=params_for(day))
    with pytest.raises(TransportConnectionError):
        pipeline.extract(CrashesAfterThreePages(es), conn, export_config(env), job)
    saved = tracking.load_checkpoint(conn, job.job_id)
    assert not saved.finished and saved.ids_before > 0
    counting = CountsPages(es)
    result = pipeline.extract(counting, conn, export_config(env), job)
    abandon(conn, job)
    conn.close()
    assert result.resumed
    assert result.ids_found == count_day(es, env, day)
    # Resumed at the checkpoint, not from the start (10 ids a page).
    assert counting.pages <= -(-(result.ids_found - saved.ids_before) // 10) + 1 < -(-result.ids_found // 10)


def stack(action, service):
    out = subprocess.run(["bash", str(ROOT / "devstack" / "stack.sh"), action, service], capture_output=True,
                         text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture()
def local_node():
    if not (ROOT / ".local" / "pids" / "elasticsearch.pid").exists():
        pytest.skip("the Elasticsearch node is external (ES_URL): this test stops and restarts the local node")
    yield
    stack("start", "elasticsearch")  # whatever happened, leave it running


class StopsNodeBeforeDetails(CountsPages):
    """The real node goes down just as the batch asks for its messages' details."""

    def msearch(self, **kw):
        stack("stop", "elasticsearch")
        return self._es.msearch(**kw)


def test_elasticsearch_stopped_mid_batch_and_restarted(env, es, s3, local_node):
    from elasticsearch import Elasticsearch

    day = SEED.start + timedelta(days=4)
    cfg = export_config(env)
    conn = connect(DB)
    job, batch = one_batch_of_day(es, conn, cfg, day)
    down = Elasticsearch(os.environ["ES_URL"], max_retries=1, request_timeout=5)
    with pytest.raises(TransportConnectionError):
        pipeline.process_batch(StopsNodeBeforeDetails(down), conn, s3, cfg, batch, run_id=job.run_id)
    assert query("SELECT status, last_error LIKE %s FROM batch_progress WHERE id = %s", "%Connection%",
                 batch.batch_id) == (("failed", 1),)
    stack("start", "elasticsearch")
    # The task's retry, on a node that is back.
    result = pipeline.process_batch(Elasticsearch(os.environ["ES_URL"]), conn, s3, cfg, batch, run_id=job.run_id)
    conn.close()
    assert (result.attempted, result.completed) == (batch.size, batch.size)
    assert_day_exported_exactly_once(s3, env, day)


def test_a_cluster_down_when_the_run_starts_is_retried_until_it_is_back(env, es, s3, local_node):
    """Elasticsearch is stopped when the run starts and back 3 s later: the extract's retry finds it, the
    run ends green with no person acting (it used to fail at once: 'cannot reach the search cluster')."""
    import threading

    day = SEED.start + timedelta(days=2)
    stack("stop", "elasticsearch")
    back = threading.Timer(3, stack, args=("start", "elasticsearch"))
    back.start()
    try:
        dr = run_dag("es_message_export", **day_conf(day))
    finally:
        back.join()
    assert dr.state == "success"
    tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
    assert tries["extract"] >= 2, tries
    assert_day_exported_exactly_once(s3, env, day)


class RestartsMariadbMidBatch:
    """Real S3 uploads; after five of them the tracking database restarts under the running batch."""

    def __init__(self, s3):
        self._s3, self.puts = s3, 0

    def put_object(self, **kw):
        self.puts += 1
        if self.puts == 5:
            stack("stop", "mariadb")
            stack("start", "mariadb")
        return self._s3.put_object(**kw)


def test_mariadb_restarted_during_a_batch(env, es, s3):
    import MySQLdb

    day = SEED.start + timedelta(days=5)
    cfg = export_config(env)
    conn = connect(DB)
    job, batch = one_batch_of_day(es, conn, cfg, day)
    with pytest.raises(MySQLdb.OperationalError):
        pipeline.process_batch(es, conn, RestartsMariadbMidBatch(s3), cfg, batch, run_id=job.run_id)
    conn = connect(DB)  # the task's retry opens a new connection
    result = pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    conn.close()
    assert (result.attempted, result.completed) == (batch.size, batch.size)
    assert_day_exported_exactly_once(s3, env, day)


def test_no_password_in_logs_or_errors(env, capfd):
    password = os.environ["MYSQL_PASSWORD"]
    dr = run_dag("es_message_export", **day_conf(SEED.start + timedelta(days=3)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_MYSQL_TRACKING", json.dumps({**json.loads(os.environ["AIRFLOW_CONN_MYSQL_TRACKING"]),
                                                             "login": "nobody"}))
        failed = run_dag("es_message_export", **day_conf(SEED.start + timedelta(days=3)))
    out, err = capfd.readouterr()
    assert dr.state == "success" and failed.state == "failed"
    assert "Access denied" in out + err
    assert password not in out + err
