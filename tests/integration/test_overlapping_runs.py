"""Two runs over the same interval at once (issue 16): a backfill or a manual run while the
scheduled run still exports the day.

The behaviour: a run leaves the messages another live run holds to that run, its reconcile waits
until that run has exported them, then counts them as "exported by job N (run id)". No run fails
for messages another run exported; job_runs and the manifest say which job exported which part.

First the interleaving step by step on the core (deterministic), then two real concurrent runs in
the running Airflow, with dispatch=local and dispatch=sqs.
"""

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

import support
from es_export import pipeline, sink, tracking
from es_export.config import ExportConfig, RunParams
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

DB = "tracking_test_overlap"
SEED = SeedConfig(messages=90, days=1, start=date(2025, 4, 1), seed=61, large=0)


@pytest.fixture(scope="module")
def cfg(es, s3):
    with support.own_indices(es, SEED, "ov") as indices:
        config = ExportConfig(**indices, bucket=f"overlap-{uuid.uuid4().hex[:8]}")
        s3.create_bucket(Bucket=config.bucket)
        yield config


def test_a_second_run_leaves_held_messages_to_the_first_and_both_end_green(es, s3, cfg):
    support.reset_database(DB)
    a_conn, b_conn = support.connect(DB), support.connect(DB)
    start = datetime(2025, 4, 1, tzinfo=UTC)
    params = RunParams(start=start, end=start + timedelta(days=1), batch_size=30)
    a = pipeline.open_job(a_conn, dag_id="es_message_export", run_id="scheduled__2025-04-02", params=params)
    b = pipeline.open_job(b_conn, dag_id="es_message_export", run_id="backfill__2025-04-02", params=params)
    pipeline.extract(es, a_conn, cfg, a)
    pipeline.extract(es, b_conn, cfg, b)  # finds the same ids, all tracked already
    a_batches = pipeline.plan(a_conn, cfg, a, params)
    b_batches = pipeline.plan(b_conn, cfg, b, params)
    assert [x.size for x in a_batches] == [30, 30, 30] and b_batches == []
    pipeline.process_batch(es, a_conn, s3, cfg, a_batches[0], run_id=a.run_id)
    # B's reconcile would wait now: A still holds 60 messages of the interval.
    (share,) = pipeline.others_still_exporting(b_conn, b)
    assert (share.job_id, share.run_id, share.messages) == (a.job_id, a.run_id, 60)
    for batch in a_batches[1:]:
        pipeline.process_batch(es, a_conn, s3, cfg, batch, run_id=a.run_id)
    assert pipeline.others_still_exporting(b_conn, b) == []
    b_report = pipeline.reconcile(es, b_conn, s3, cfg, b)
    a_report = pipeline.reconcile(es, a_conn, s3, cfg, a)
    assert (a_report.status, a_report.exported_this_run, a_report.exported_by_others) == ("completed", 90, 0)
    assert (b_report.status, b_report.exported_this_run, b_report.exported_by_others) == ("completed", 0, 90)
    assert b_report.exported_by == [{"job_id": a.job_id, "dag_id": "es_message_export", "run_id": a.run_id,
                                     "messages": 90, "this_run": False}]
    assert support.query(DB, "SELECT run_id, status, completed, exported_by_others FROM job_runs ORDER BY id") == (
        (a.run_id, "completed", 90, 0), (b.run_id, "completed", 0, 90))
    manifest = json.loads(s3.get_object(Bucket=cfg.bucket, Key=sink.manifest_key(cfg.prefix, b.dag_id, b.run_id))[
        "Body"].read())
    assert manifest["exported_by"][0]["run_id"] == a.run_id
    a_conn.close()
    b_conn.close()


def test_a_run_does_not_wait_for_a_run_that_died(es, s3, cfg):
    """Messages a failed run left pending are taken over instead of waited for."""
    support.reset_database(DB)
    conn = support.connect(DB)
    start = datetime(2025, 4, 1, tzinfo=UTC)
    params = RunParams(start=start, end=start + timedelta(days=1), batch_size=100)
    dead = pipeline.open_job(conn, dag_id="es_message_export", run_id="died", params=params)
    pipeline.extract(es, conn, cfg, dead)
    pipeline.plan(conn, cfg, dead, params)
    tracking.update_job(conn, dead.job_id, status="failed")  # Airflow failed it (the listener's mirror)
    rerun, batch = support.one_batch(es, conn, cfg, params, run_id="manual")
    assert batch.size == SEED.messages and pipeline.others_still_exporting(conn, rerun) == []
    pipeline.process_batch(es, conn, s3, cfg, batch, run_id=rerun.run_id)
    assert pipeline.reconcile(es, conn, s3, replace(cfg), rerun).status == "completed"
    conn.close()


# ---------------------------------------------------------------------------- in the running Airflow

DAG = "es_message_export"


@pytest.mark.parametrize("mode", ["local", "sqs"])
def test_two_concurrent_runs_of_one_day_in_airflow_both_end_green(running_airflow, es, s3, mode):
    day = date(2024, 10, 20) if mode == "local" else date(2024, 10, 21)
    seed = SeedConfig(messages=400, days=1, start=day, seed=71 if mode == "local" else 72, large=0)
    cfg = running_airflow.config
    # A day of its own in the running Airflow's indices, added to what is there.
    support.seed_indices(es, cfg, seed, recreate=False)
    conf = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat(), "batch_size": 50,
            "dispatch": mode}
    api = running_airflow.api
    first = api.trigger(DAG, conf)
    time.sleep(2)  # the reproduction: the second run two seconds later
    second = api.trigger(DAG, conf)
    states = api.wait_for_runs(DAG, [first, second], timeout=600)
    assert states == {first: "success", second: "success"}
    rows = support.query(running_airflow.db, "SELECT run_id, status, completed, exported_by_others FROM job_runs"
                                             " WHERE run_id IN (%s, %s)", first, second)
    by_run = {r[0]: r[1:] for r in rows}
    assert {s for s, _, _ in by_run.values()} == {"completed"}
    # Every message exported exactly once, split between the two jobs however they raced.
    assert sum(c for _, c, _ in by_run.values()) == seed.messages
    for _, completed, others in by_run.values():
        assert completed + others == seed.messages
    # The status page shows the same split.
    jobs = api.call("GET", "/es-export/jobs.json", params={"limit": 50})["jobs"]
    shown = {j["run_id"]: (j["completed"], j["exported_by_others"]) for j in jobs if j["run_id"] in by_run}
    assert shown == {run: (c, o) for run, (_, c, o) in by_run.items()}
    assert len(support.s3_keys(s3, cfg["bucket"], sink.day_prefix(cfg["prefix"], day))) == seed.messages
    assert support.query(running_airflow.db, "SELECT status, COUNT(*) FROM message_tracking WHERE message_ts >= %s"
                                             " AND message_ts < %s GROUP BY status", day,
                         day + timedelta(days=1)) == (("completed", seed.messages),)
