"""Operating the export in a running Airflow (airflow standalone), through its REST API: a backfill,
clearing one batch, marking runs by hand, the late-run alert, metrics and the status page."""

from __future__ import annotations

import html
import json
import re
import time
from datetime import date, timedelta

import pytest
import requests

import running_airflow as ra
import support
from es_export import sink
from support import query

pytestmark = pytest.mark.integration

DAG = "es_message_export"
DAYS = [date(2024, 10, 1), date(2024, 10, 2), date(2024, 10, 3)]


def es_count(es, index: str, day: date) -> int:
    body = {"query": {"range": {"timestamp": {"gte": day.isoformat(), "lt": (day + timedelta(days=1)).isoformat()}}}}
    return es.count(index=index, body=body)["count"]


def s3_keys(s3, bucket: str, day: date) -> list[str]:
    return support.s3_keys(s3, bucket, sink.day_prefix(ra.CONFIG["prefix"], day))


def exported_at(s3, key: str) -> str:
    body = s3.get_object(Bucket=ra.CONFIG["bucket"], Key=key)["Body"].read()
    return json.loads(body)["export"]["exported_at"]


def job_row(run_id: str) -> dict:
    rows = query(ra.TRACKING_DB, "SELECT id, status, airflow_state, airflow_try, airflow_started_at,"
                 " airflow_ended_at, airflow_url, interval_start, completed, failed FROM job_runs"
                 " WHERE dag_id = %s AND run_id = %s", DAG, run_id)
    assert len(rows) == 1, f"expected one job_runs row for {run_id}, found {len(rows)}"
    keys = ("id", "status", "airflow_state", "airflow_try", "started", "ended", "url", "interval_start",
            "completed", "failed")
    return dict(zip(keys, rows[0], strict=True))


@pytest.fixture(scope="module")
def backfill(running_airflow):
    """A three-day backfill created through POST /api/v2/backfills, finished."""
    api, statsd = running_airflow.api, running_airflow.statsd
    before = {m: statsd.total(f"airflow.es_export.{m}") for m in ("messages_exported", "batches")}
    created = api.call("POST", "/api/v2/backfills", json={
        "dag_id": DAG, "from_date": "2024-10-01T00:00:00Z", "to_date": "2024-10-03T00:00:00Z",
        "dag_run_conf": {"batch_size": 100}, "reprocess_behavior": "none", "max_active_runs": 3})
    deadline = time.monotonic() + 60
    while True:
        runs = [r for r in api.runs(DAG) if r["run_type"] == "backfill"]
        if len(runs) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(2)
    run_ids = {date.fromisoformat(r["logical_date"][:10]): r["dag_run_id"] for r in runs}
    states = api.wait_for_runs(DAG, list(run_ids.values()), timeout=900)
    # Metrics are sent when a batch finishes; give the last UDP datagrams a moment.
    time.sleep(2)
    return {"backfill": created, "runs": run_ids, "states": states,
            # What the backfill's batches sent, whatever other tests ran before in this Airflow.
            "exported_metric": statsd.total("airflow.es_export.messages_exported") - before["messages_exported"],
            "batches_metric": statsd.total("airflow.es_export.batches") - before["batches"]}


def test_the_running_airflow_runs_the_mwaa_bundle_alone(running_airflow):
    api = running_airflow.api
    assert api.call("GET", "/api/v2/importErrors")["total_entries"] == 0
    for dag_id in (DAG, "es_message_retry"):
        fileloc = api.call("GET", f"/api/v2/dags/{dag_id}/details")["fileloc"]
        assert fileloc.startswith(str(ra.INSTANCE_HOME / "mwaa" / "dags")), fileloc
    plugins = {p["name"]: p for p in api.call("GET", "/api/v2/plugins")["plugins"]}
    assert plugins["es_export"]["listeners"] == ["es_export_airflow.run_mirror"]


def test_backfill_makes_one_successful_run_per_day(backfill):
    assert sorted(backfill["runs"]) == DAYS, backfill["runs"]
    assert set(backfill["states"].values()) == {"success"}, backfill["states"]


def test_each_backfilled_day_has_its_job_and_exactly_its_objects(backfill, es, s3):
    for day, run_id in backfill["runs"].items():
        job = job_row(run_id)
        expected = es_count(es, ra.CONFIG["messages_index"], day)
        assert expected > 0
        assert job["interval_start"].date() == day
        assert (job["status"], job["completed"], job["failed"]) == ("completed", expected, 0), job
        assert len(s3_keys(s3, ra.CONFIG["bucket"], day)) == expected


def test_job_runs_mirror_the_airflow_runs(backfill, running_airflow):
    for run_id in backfill["runs"].values():
        job, run = job_row(run_id), running_airflow.api.run(DAG, run_id)
        assert job["airflow_state"] == run["state"] == "success"
        assert job["airflow_try"] == 1
        assert job["started"] is not None and job["ended"] is not None and job["ended"] >= job["started"]
        assert job["url"] == f"{ra.URL}/dags/{DAG}/runs/{requests.utils.quote(run_id, safe='')}"


def test_each_exported_day_is_announced_as_an_asset(backfill, running_airflow):
    """A downstream DAG can be scheduled on the alias es_message_export_days or on one day's folder."""
    events = running_airflow.api.call("GET", "/api/v2/assets/events", params={
        "source_dag_id": DAG, "source_task_id": "reconcile", "limit": 100})["asset_events"]
    by_run = {e["source_run_id"]: e for e in events if e["source_run_id"] in backfill["runs"].values()}
    assert {day: by_run[run_id]["uri"] for day, run_id in backfill["runs"].items()} == {
        day: sink.day_uri(ra.CONFIG["bucket"], ra.CONFIG["prefix"], day).rstrip("/") for day in DAYS}
    assert {by_run[run_id]["extra"]["day"] for run_id in backfill["runs"].values()} == {
        d.isoformat() for d in DAYS}


def test_metrics_count_every_exported_message_and_batch(backfill, es):
    total = sum(es_count(es, ra.CONFIG["messages_index"], d) for d in DAYS)
    assert backfill["exported_metric"] == total
    assert backfill["batches_metric"] == 9  # 300 messages a day in batches of 100


def test_each_batch_writes_one_structured_log_line(backfill):
    run_id = backfill["runs"][DAYS[0]]
    batches = dict(query(ra.TRACKING_DB, "SELECT b.id, b.completed FROM batch_progress b JOIN job_runs j"
                         " ON j.id = b.job_id WHERE j.run_id = %s", run_id))
    records = []
    for map_index in range(3):
        for line in ra.task_log(DAG, run_id, "process", map_index).splitlines():
            # Task logs are JSON lines; our record is the JSON text of one line's "event".
            event = json.loads(line).get("event", "") if line.startswith("{") else ""
            record = json.loads(event) if event.startswith("{") else {}
            if record.get("event") == "es_export.batch":
                records.append(record)
    assert len(records) == 3, records
    for record in records:
        assert record["completed"] == batches[record["batch_id"]] and record["failed"] == 0
        assert record["bytes_written"] > 0 and record["run_id"] == run_id


def test_late_run_alert_reaches_the_sns_topic(backfill, running_airflow):
    wanted = set(backfill["runs"].values())
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while not wanted <= seen and time.monotonic() < deadline:
        resp = running_airflow.sqs.receive_message(QueueUrl=running_airflow.alerts_queue, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=2)
        for m in resp.get("Messages", []):
            body = json.loads(m["Body"])
            if body.get("Subject") != "es_message_export: late run":
                continue  # a failed-run alert goes to the same topic (tested in test_run_alerts.py)
            assert "is late" in body["Message"]
            seen.update(r for r in wanted if r in body["Message"])
    assert wanted <= seen, f"no late-run alert for {wanted - seen}"


def _batches_by_map_index(api, run_id: str) -> dict[int, int]:
    """map_index -> batch_id, read from the grid label 'batch N (id B, M msgs)'."""
    out = {}
    for ti in api.task_instances(DAG, run_id):
        if ti["task_id"] == "process":
            out[ti["map_index"]] = int(re.search(r"\(id (\d+),", ti["rendered_map_index"]).group(1))
    return out


def test_clearing_one_batch_exports_only_that_batch_again(backfill, running_airflow, es, s3):
    api, run_id = running_airflow.api, backfill["runs"][DAYS[1]]
    batches = _batches_by_map_index(api, run_id)
    assert len(batches) == 3
    keys = {b: dict(query(ra.TRACKING_DB, "SELECT message_id, s3_key FROM message_tracking WHERE batch_id = %s",
                          b)) for b in batches.values()}
    before = {b: {k: exported_at(s3, k) for k in ks.values()} for b, ks in keys.items()}
    target = batches[1]
    # One message of the cleared batch has vanished from Elasticsearch since: it must end failed,
    # with its reason, while the rest of the batch is exported again.
    gone = sorted(keys[target])[0]
    es.delete(index=ra.CONFIG["messages_index"], id=gone, refresh=True)

    api.call("POST", f"/api/v2/dags/{DAG}/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": run_id, "task_ids": [["process", 1]], "only_failed": False,
        "reset_dag_runs": True})
    time.sleep(3)
    assert api.wait_for_runs(DAG, [run_id], timeout=300) == {run_id: "success"}

    attempts = dict(query(ra.TRACKING_DB, "SELECT id, attempts FROM batch_progress WHERE id IN (%s, %s, %s)",
                          *batches.values()))
    assert attempts == {b: (2 if b == target else 1) for b in batches.values()}
    for batch_id, objects in before.items():
        for key, stamp in objects.items():
            if keys[batch_id].get(gone) == key:
                continue
            changed = exported_at(s3, key) != stamp
            assert changed == (batch_id == target), (batch_id, key)
    status, error = query(ra.TRACKING_DB, "SELECT status, last_error FROM message_tracking WHERE message_id = %s",
                          gone)[0]
    assert status == "failed" and "no longer in index" in error
    tries = {ti["map_index"]: ti["try_number"] for ti in api.task_instances(DAG, run_id) if ti["task_id"] == "process"}
    assert tries == {0: 1, 1: 2, 2: 1}
    assert job_row(run_id)["airflow_try"] == 2  # the run was cleared once: job_runs follows


def test_marking_a_run_by_hand_is_mirrored(backfill, running_airflow):
    api, run_id = running_airflow.api, backfill["runs"][DAYS[2]]
    path = f"/api/v2/dags/{DAG}/dagRuns/{requests.utils.quote(run_id, safe='')}"
    api.call("PATCH", path, json={"state": "failed"})
    job = job_row(run_id)
    assert job["airflow_state"] == api.run(DAG, run_id)["state"] == "failed"
    assert job["status"] == "completed"  # the export itself did finish; only Airflow's verdict changed
    api.call("PATCH", path, json={"state": "success"})
    assert job_row(run_id)["airflow_state"] == "success"


def test_a_run_refused_before_any_work_is_recorded_failed(running_airflow):
    api = running_airflow.api
    run_id = api.trigger(DAG, {"start": "2024-10-05", "end": "2024-10-01"})
    assert api.wait_for_runs(DAG, [run_id], timeout=300) == {run_id: "failed"}
    job = job_row(run_id)
    assert (job["airflow_state"], job["status"]) == ("failed", "failed")


def test_status_page_lists_jobs_and_failed_messages_for_signed_in_users(backfill, running_airflow):
    assert requests.get(f"{ra.URL}/es-export/", timeout=30).status_code == 401
    page = running_airflow.api.session.get(f"{ra.URL}/es-export/", timeout=30)
    assert page.status_code == 200
    for run_id in backfill["runs"].values():
        assert run_id in page.text
    data = running_airflow.api.call("GET", "/es-export/jobs.json")
    failed = [m for m in data["problems"] if m["status"] == "failed"]
    assert failed and "no longer in index" in failed[0]["last_error"]
    assert html.escape(failed[0]["message_id"]) in page.text
    cleared = job_row(backfill["runs"][DAYS[1]])["id"]
    one_job = running_airflow.api.session.get(f"{ra.URL}/es-export/", params={"job_id": cleared}, timeout=30).text
    assert f"Batches of job {cleared}" in one_job
    batches = running_airflow.api.call("GET", "/es-export/jobs.json", params={"job_id": cleared})["batches"]
    assert sorted(b["attempts"] for b in batches) == [1, 1, 2]
