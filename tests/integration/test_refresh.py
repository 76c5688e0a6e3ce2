"""es_message_refresh on the real stack: a late history entry, a status changed in place, a new audit entry
and a late message reach the archive after one refresh; only those objects are rewritten; a second
refresh rewrites nothing; a change written while a batch fetches is picked up by the next refresh; a
refresh that stops half way loses nothing and rewrites nothing twice."""

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

import support
from es_export import pipeline, sink, source, tracking
from es_export.config import ExportConfig
from scenarios import refresh
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=40, days=1, start=date(2025, 3, 4), seed=11, large=0)
DAY = SEED.start
LOOKBACK = (date.today() - DAY).days + 2  # the seeded day is a past day the refresh compares for late messages


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture()
def world(es, s3, airflow_db):
    """Own indices (the status index maps an updated_at), bucket and tracking database; Airflow pointed at
    them; yields (config dict, database, bucket)."""
    database = f"tracking_test_refresh_{uuid.uuid4().hex[:6]}"
    bucket = f"refresh-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    support.reset_database(database)
    with support.own_indices(es, SEED, "r") as indices, pytest.MonkeyPatch.context() as mp:
        es.indices.put_mapping(index=indices["status_index"], properties={"updated_at": {"type": "date"}})
        config = {**indices, "bucket": bucket, "related_changed_fields": {"status": "updated_at"},
                  "refresh_lookback_days": LOOKBACK, "settle_minutes": 0}
        support.point_airflow_at(mp, config, database)
        mp.setenv("ES_EXPORT_POKE_SECONDS", "1")
        yield config, database, bucket


def export_day():
    """The seeded day through es_message_export, as Airflow is pointed (Variable, connections)."""
    run = support.run_dag("es_message_export", start=DAY.isoformat(), end=(DAY + timedelta(days=1)).isoformat())
    assert run.state == "success"


def refresh_dag(**params):
    return support.run_dag("es_message_refresh", **params)


def documents(s3, bucket):
    """message id -> (its document without the export metadata, the key holding it, that object's ETag)."""
    out = {}
    for key in support.s3_keys(s3, bucket, "messages/dt="):
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        for doc in support.archived_documents(s3, bucket, key):
            doc.pop("export")
            assert doc["message_id"] not in out, f"{doc['message_id']} is in two objects"
            out[doc["message_id"]] = (doc, key, etag)
    return out


def three_of(es, config, ids):
    """Three exported messages, the second one with a status document."""
    status = es.search(index=config["status_index"], query={"terms": {"message_id": ids}}, size=1,
                       sort=["message_id"])["hits"]["hits"][0]["_source"]["message_id"]
    others = [m for m in ids if m != status]
    return [others[0], status, others[1]]


def change_three_and_add_a_late_one(es, config, ids):
    """A history entry for the first of `three_of(ids)`, its status document updated in place for the
    second, an audit entry for the third, and a late message on the exported day; returns the late id."""
    a, b, c = three_of(es, config, ids)
    es.index(index=config["history_index"], document={"message_id": a, "timestamp": now_iso(), "event": "read"})
    status = es.search(index=config["status_index"], query={"term": {"message_id": b}}, size=1)["hits"]["hits"][0]
    es.update(index=config["status_index"], id=status["_id"], doc={"status": "read", "updated_at": now_iso()})
    es.index(index=config["audit_index"], document={"message_id": c, "timestamp": now_iso(), "note": "checked"})
    late = f"late-{uuid.uuid4().hex[:6]}"
    es.index(index=config["messages_index"], id=late,
             document={"message_id": late, "timestamp": f"{DAY.isoformat()}T23:59:58Z", "body": "delayed"})
    es.index(index=config["history_index"], document={"message_id": late, "timestamp": now_iso(), "event": "sent"})
    for key in ("messages_index", "history_index", "status_index", "audit_index"):
        es.indices.refresh(index=config[key])
    return late


@pytest.mark.parametrize("layout", ["per_message", "ndjson_gzip", "parquet"])
def test_changed_and_late_messages_reach_the_archive_and_nothing_else_is_rewritten(es, s3, world, layout):
    config, database, bucket = world
    with support.config_changed(config, layout=layout):
        export_day()
        before = documents(s3, bucket)
        ids = three_of(es, config, sorted(before))
        late = change_three_and_add_a_late_one(es, config, sorted(before))
        run = refresh_dag()
        assert run.state == "success"
        after = documents(s3, bucket)
        changed = set(ids[:3]) | {late}
        assert set(after) == set(before) | {late}  # every message once, the late one added
        assert after[ids[0]][0]["history"][-1]["event"] == "read"
        assert any(s.get("status") == "read" and s.get("updated_at") for s in after[ids[1]][0]["status"])
        assert after[ids[2]][0]["audit"][-1]["note"] == "checked"
        assert after[late][0]["message"]["body"] == "delayed"
        # The others: the same document in the same object; per message, the same ETag (never PUT again).
        # An NDJSON file is rewritten without the changed messages' old documents, so only its key counts.
        width = 3 if layout == "per_message" else 2
        assert {m for m in before if after[m][:width] != before[m][:width]} == changed - {late}
        if layout != "per_message":  # the new file(s) hold exactly the changed messages
            new_keys = {after[m][1] for m in after} - {before[m][1] for m in before}
            assert {m for m in after if after[m][1] in new_keys} == changed
        summary = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
        assert summary["found"]["rewritten"] == 3 and summary["found"]["late"] == 1
        assert summary["completed"] == 4 and summary["watermark"] and summary["days"] == {DAY.isoformat(): 4}
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=sink.manifest_key(
            "messages", "es_message_refresh", run.run_id))["Body"].read())
        assert manifest["days"] == summary["days"] and manifest["found"]["late"] == 1
        conn = support.connect(database)
        try:
            fresh = tracking.freshness(conn)
        finally:
            conn.close()
        assert fresh["days"][0]["day"] == DAY.isoformat() and fresh["days"][0]["rewritten"] == 4
        assert fresh["watermarks"][0]["watermark"] == summary["watermark"]

        again = refresh_dag()  # from the watermark less the overlap: sees the same changes, rewrites nothing
        assert again.state == "success"
        assert documents(s3, bucket) == after
        found = again.get_task_instance("summarize").xcom_pull(task_ids="summarize")["found"]
        assert found["rewritten"] == 0 and found["unchanged"] >= 3 and found["late"] == 0

        export_day()  # the day's own run: reconcile agrees, the late message included


@pytest.fixture()
def exported(es, s3, world):
    """The seeded day exported; (ExportConfig, an open tracking connection, the ids)."""
    config, database, bucket = world
    export_day()
    conn = support.connect(database)
    try:
        yield ExportConfig.from_mapping(config), conn, sorted(documents(s3, bucket))
    finally:
        conn.close()


def test_a_refresh_that_stops_half_way_loses_nothing_and_rewrites_nothing_twice(es, s3, exported):
    cfg, conn, exported_ids = exported
    original = documents(s3, cfg.bucket)
    ids = three_of(es, cfg.__dict__, exported_ids)
    late = change_three_and_add_a_late_one(es, cfg.__dict__, exported_ids)
    changed = set(ids[:3]) | {late}
    assert refresh(es, conn, s3, cfg, run_id="refresh-dies", stop_after_batches=2).unfinished == 2
    halfway = documents(s3, cfg.bucket)
    done_first = {m for m in changed if m in halfway and (m not in original or halfway[m][2] != original[m][2])}
    assert len(done_first) == 2
    summary = refresh(es, conn, s3, cfg, run_id="refresh-again")
    after = documents(s3, cfg.bucket)
    assert set(after) == set(original) | {late}
    assert {m for m in done_first if after[m][2] != halfway[m][2]} == set()  # not rewritten twice
    assert all(after[m][2] != original[m][2] for m in changed - done_first - {late})  # the rest done now
    assert {m for m in original if after[m][2] != original[m][2]} == changed - {late}  # nothing else
    assert after[ids[0]][0]["history"][-1]["event"] == "read" and after[late][0]["message"]["body"] == "delayed"
    assert summary.unfinished == 0 and summary.failed == 0 and summary.watermark


def test_a_change_written_while_a_batch_fetches_is_picked_up_by_the_next_refresh(es, s3, exported, monkeypatch):
    cfg, conn, ids = exported
    target = ids[5]
    es.index(index=cfg.history_index, document={"message_id": target, "timestamp": now_iso(), "event": "first"},
             refresh=True)
    real_fetch = source.fetch_details
    fetches = []

    def fetch_then_write(es_, cfg_, message_ids, indices=None):
        details = real_fetch(es_, cfg_, message_ids, indices)
        fetches.append(target in message_ids)
        if fetches.count(True) == 2 and fetches[-1]:  # the batch's fetch (the first is find_changes')
            es.index(index=cfg.history_index, refresh=True,  # written right after the batch read it
                     document={"message_id": target, "timestamp": now_iso(), "event": "during"})
        return details

    with monkeypatch.context() as mp:
        mp.setattr(source, "fetch_details", fetch_then_write)
        first = refresh(es, conn, s3, cfg, run_id="refresh-during")
    assert first.completed == 1
    events = [h.get("event") for h in documents(s3, cfg.bucket)[target][0]["history"]]
    assert "first" in events and "during" not in events
    second = refresh(es, conn, s3, cfg, run_id="refresh-after")
    assert second.completed == 1
    events = [h.get("event") for h in documents(s3, cfg.bucket)[target][0]["history"]]
    assert "during" in events


@pytest.mark.parametrize("mode", ["lambda", "sqs"])
def test_the_refresh_runs_its_batches_in_the_lambda_too(es, s3, world, mode):
    """The refresh's batches go through the processing Lambda (invoked, or behind its SQS queue) as the
    export's do: the changed messages rewritten, the others not."""
    config, database, bucket = world
    export_day()
    before = documents(s3, bucket)
    late = change_three_and_add_a_late_one(es, config, sorted(before))
    changed = set(three_of(es, config, sorted(before))) | {late}
    with support.local_lambda(f"es-refresh-{mode}", export_config={k: v for k, v in config.items()
                                                                   if k.endswith("_index") or k == "bucket"},
                              database=database) as function, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", function.aws_connection())
        with support.config_changed(config, **function.airflow_config()):
            run = refresh_dag(dispatch=mode, batch_size=1)
    assert run.state == "success"
    after = documents(s3, bucket)
    assert {m for m in before if after[m] != before[m]} == changed - {late} and late in after
    rows = support.query(database, "SELECT COUNT(*) FROM message_tracking WHERE status <> 'completed'"
                                   " OR source_version IS NULL")
    assert rows[0][0] == 0


@pytest.mark.parametrize("layout", ["per_message", "ndjson_gzip"])
def test_a_message_deleted_from_the_cluster_stays_in_the_archive_until_it_is_erased(es, s3, world, layout):
    import os
    import subprocess
    import sys

    config, database, bucket = world
    with support.config_changed(config, layout=layout):
        export_day()
        before = documents(s3, bucket)
        gone = sorted(before)[7]
        es.index(index=config["history_index"], refresh=True,
                 document={"message_id": gone, "timestamp": now_iso(), "event": "erasure requested"})
        es.delete(index=config["messages_index"], id=gone, refresh=True)
        run = refresh_dag()
        assert run.state == "success"
        assert run.get_task_instance("summarize").xcom_pull(task_ids="summarize")["found"]["deleted_in_source"] == 1
        kept = documents(s3, bucket)
        assert kept[gone][0] == before[gone][0]  # an archive keeps what it took

        env = {**os.environ, "EXPORT_CONFIG": json.dumps({**config, "layout": layout}), "MYSQL_DB": database}
        out = subprocess.run([sys.executable, "-m", "es_export.erase", gone], env=env, capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stderr
        after = documents(s3, bucket)
        assert set(after) == set(before) - {gone}
        assert all(after[m][0] == before[m][0] for m in after)
        assert support.query(database, "SELECT COUNT(*) FROM message_tracking WHERE message_id = %s", gone)[0][0] == 0
        export_day()  # the day's run agrees: the cluster, tracking and S3 all lack it


def test_a_change_while_a_worker_exports_the_message_is_looked_at_again_by_the_next_refresh(es, s3, world, exported,
                                                                                            monkeypatch):
    """The refresh finds the change while another run's batch holds the message (running): it leaves it
    to that batch, which read the message before the change, and notes it; the next refresh looks at it
    again although the change is before its window, and rewrites it."""
    from es_export.config import RunParams

    cfg, conn, ids = exported
    target = ids[3]
    rerun = RunParams(start=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC),
                      end=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(days=1),
                      batch_size=500, reprocess=True)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="rerun-while-changing", params=rerun)
    pipeline.extract(es, conn, cfg, job)
    (batch,) = pipeline.plan(conn, cfg, job, rerun)
    real_fetch = source.fetch_details
    during = {}

    def fetch_then_change_and_refresh(es_, cfg_, message_ids, indices=None):
        details = real_fetch(es_, cfg_, message_ids, indices)
        if target in message_ids and not during:
            during["at"] = datetime.now(UTC)
            es.index(index=cfg.history_index, refresh=True,
                     document={"message_id": target, "timestamp": now_iso(), "event": "while exporting"})
            with monkeypatch.context() as inner:
                inner.setattr(source, "fetch_details", real_fetch)
                other = support.connect(world[1])
                try:
                    during["summary"] = refresh(es, other, s3, cfg, run_id="refresh-during-export")
                finally:
                    other.close()
        return details

    with monkeypatch.context() as mp:
        mp.setattr(source, "fetch_details", fetch_then_change_and_refresh)
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    tracking.update_job(conn, job.job_id, status="completed")
    assert during["summary"].found["left_to_others"] >= 1
    assert "while exporting" not in [h.get("event") for h in documents(s3, cfg.bucket)[target][0]["history"]]

    after_the_change = datetime.now(UTC)  # the next window does not hold the change: only the recheck finds it
    later = refresh(es, conn, s3, cfg, run_id="refresh-after-export", since=after_the_change)
    assert later.completed == 1
    assert "while exporting" in [h.get("event") for h in documents(s3, cfg.bucket)[target][0]["history"]]


def test_a_related_index_without_its_change_time_field_is_refused_when_the_run_starts(es, world):
    from es_export.errors import SourceError

    config, database, bucket = world
    bad = ExportConfig.from_mapping({**config, "related_changed_fields": {"status": "changed_on"}})
    with pytest.raises(SourceError, match=r"the status index cannot be refreshed: index '[^']+' has no field "
                                          r"'changed_on' in its mapping; set related_changed_fields.status"):
        source.check_changed_fields(es, bad)
    with support.config_changed(config, related_changed_fields={"status": "changed_on"}):
        run = refresh_dag()
    assert run.state == "failed"
    start = run.get_task_instance("start_job")
    assert start.state == "failed" and run.get_task_instance("find_changes").state == "upstream_failed"
    assert support.query(database, "SHOW TABLES") == ()  # refused before it migrated or wrote anything
