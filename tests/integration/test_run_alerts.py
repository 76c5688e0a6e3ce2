"""A failed run sends exactly one alert (SNS, read back through a subscribed SQS queue): the run, its
interval, its counts from job_runs and its first reasons; a successful run sends none. dag.test()
runs the DAG's on_failure_callback itself; where the tracking database hangs, the callback is called
with the context Airflow's DAG processor builds for a run without a task to blame."""

import time
import uuid
from datetime import date, datetime, timedelta

import pytest

import support
from es_export_airflow import alerts
from seed_data import SeedConfig, ids_for_day
from support import (
    black_holed_port,
    config_changed,
    connect,
    mysql_connection_at,
    new_tracking_database,
    parse_dag,
    point_airflow_at,
    run_dag,
    sns_messages,
)

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=40, days=2, start=date(2025, 1, 10), seed=41, large=0)
DB = "tracking_test_run_alerts"
FAILED = "es_message_export: run failed"


@pytest.fixture(scope="module")
def env(es, s3, airflow_db, module_monkeypatch):
    with support.own_indices(es, SEED, "ra") as indices:
        cfg = {**indices, "bucket": f"run-alerts-{uuid.uuid4().hex[:8]}", "prefix": "messages",
               "retry_base_seconds": 1}
        s3.create_bucket(Bucket=cfg["bucket"])
        new_tracking_database(DB).close()
        point_airflow_at(module_monkeypatch, cfg, DB)
        yield cfg


def day_conf(day):
    return {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}


def test_a_run_with_a_failed_message_sends_one_alert_with_counts_and_reasons(env, es, alert_queue):
    topic, sqs, queue_url = alert_queue
    day = SEED.start
    gone = sorted(ids_for_day(SEED, day))[0]
    source = es.get(index=env["messages_index"], id=gone)["_source"]
    # Tracked by an earlier extract, then gone from Elasticsearch: only this message fails.
    with connect(DB) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO message_tracking (message_id, message_ts) VALUES (%s, %s)",
                    (gone, datetime.fromisoformat(source["timestamp"].replace("Z", "+00:00")).replace(tzinfo=None)))
        conn.commit()
    es.delete(index=env["messages_index"], id=gone, refresh=True)
    try:
        with config_changed(env, sns_topic_arn=topic):
            run = run_dag("es_message_export", **day_conf(day))
        assert run.state == "failed"
        sent = sns_messages(sqs, queue_url)
        assert [m["Subject"] for m in sent] == [FAILED]
        text = sent[0]["Message"]
        expected = len(list(ids_for_day(SEED, day)))
        (job_id,) = support.query(DB, "SELECT id FROM job_runs WHERE run_id = %s", run.run_id)[0]
        assert text.startswith(f"es_message_export run {run.run_id} failed: a task failed.")
        assert f"run_id: {run.run_id}" in text
        assert "interval: 2025-01-10T00:00:00+00:00 .. 2025-01-11T00:00:00+00:00" in text
        assert (f"counts: job_runs id {job_id}, status failed: es_count {expected - 1}, ids_found {expected - 1}"
                in text)
        assert f"completed {expected - 1}, exported_by_others 0, failed 1, objects {expected - 1}" in text
        assert "- task reconcile failed" in text
        assert f"- message {gone!r} (failed or dead, attempt 1): message {gone!r} is no longer in index" in text
    finally:
        es.index(index=env["messages_index"], id=gone, document=source, refresh=True)
    # The retry exports it: a run that succeeds sends nothing.
    time.sleep(1.5)
    with config_changed(env, sns_topic_arn=topic):
        assert run_dag("es_message_retry").state == "success"
    assert sns_messages(sqs, queue_url) == []


def test_a_run_stopped_by_start_job_says_so(env, alert_queue):
    topic, sqs, queue_url = alert_queue
    with config_changed(env, sns_topic_arn=topic):
        run = run_dag("es_message_export", start="2025-01-11", end="2025-01-10")
    assert run.state == "failed"
    sent = sns_messages(sqs, queue_url)
    assert [m["Subject"] for m in sent] == [FAILED]
    text = sent[0]["Message"]
    assert f"run_id: {run.run_id}" in text and "counts: none (the job was never opened)" in text
    assert "- task reconcile failed" in text  # the last task to fail: it found no job to reconcile
    assert "stopped before start_job opened its job" in text


def test_the_environment_topic_is_used_when_the_variable_has_none(env, alert_queue, monkeypatch):
    topic, sqs, queue_url = alert_queue
    monkeypatch.setenv("ES_EXPORT_ALERT_SNS_TOPIC_ARN", topic)
    run = run_dag("es_message_export", start="2025-01-11", end="2025-01-10")
    assert run.state == "failed"
    assert [m["Subject"] for m in sns_messages(sqs, queue_url)] == [FAILED]


def test_a_hanging_tracking_database_still_alerts_within_seconds(env, alert_queue, monkeypatch):
    topic, sqs, queue_url = alert_queue
    # The context Airflow's DAG processor gives a DAG failure callback when no task is to blame
    # (airflow.dag_processing.processor._execute_dag_callbacks): the DAG, the run id, the reason.
    context = {"dag": parse_dag("es_message_export"), "run_id": "scheduled__2025-01-11T00:00:00+00:00",
               "reason": "timed_out"}
    with config_changed(env, sns_topic_arn=topic), black_holed_port("silent") as port:
        monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", mysql_connection_at(port))
        started = time.monotonic()
        alerts.run_failed(context)
        elapsed = time.monotonic() - started
    print(f"failed-run alert with a black-holed tracking database: {elapsed:.2f} s")
    assert elapsed < 10
    sent = sns_messages(sqs, queue_url)
    assert [m["Subject"] for m in sent] == [FAILED]
    text = sent[0]["Message"]
    assert "failed: the run exceeded its dagrun_timeout." in text
    assert "the tracking database could not be read" in text and "counts: none" in text
