"""Nothing lost, nothing duplicated, nobody damaging another's batch: one scenario per guarantee, driven
through the core library as the DAGs' tasks and the Lambda call it, on the real MariaDB, S3 server and
Elasticsearch node."""

import gzip
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import seed_data
import support
from es_export import pipeline, sink, tracking
from es_export.config import Layout, RetryParams
from es_export.errors import ConfigError, ReconcileError, SourceError, StaleAttempt
from es_export.model import Batch, Outcome, RetryPolicy, Status
from scenarios import SEED, copies, day_params, documents, export, retry, rows

DAY = SEED.start
NEXT_DAY = SEED.start + timedelta(days=1)


def ids_of(day):
    return sorted(seed_data.ids_for_day(SEED, day))


def ndjson(cfg):
    return replace(cfg, layout=Layout.NDJSON_GZIP)


@pytest.fixture(params=[Layout.NDJSON_GZIP, Layout.PARQUET], ids=lambda layout: layout.value)
def bundled(request, cfg):
    """The tier's config in a layout whose files hold many messages, where superseded documents are removed
    from a file under its lock (NDJSON and Parquet alike)."""
    return replace(cfg, layout=request.param)


# ---------------------------------------------------------------------------- documents that are live


def test_a_message_failing_in_a_rerun_keeps_its_only_copy(es, conn, s3, bundled):
    """Retention purged a day's rows; a cleared rerun re-tracks them and one fails: its old copy stays."""
    cfg = bundled
    first = export(es, conn, s3, cfg, DAY)
    assert first.report.status == "completed"
    (old_file,) = documents(s3, cfg, DAY)
    rows(conn, "DELETE FROM message_tracking")  # what tracking_retention_days does to old completed rows
    victim = ids_of(DAY)[0]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    try:
        again = export(es, conn, s3, cfg, DAY, run_id=first.job.run_id,
                       before_process=lambda: es.delete(index=cfg.messages_index, id=victim, refresh=True))
        assert isinstance(again.report, ReconcileError)
        assert rows(conn, "SELECT status FROM message_tracking WHERE message_id = %s", victim) == (("failed",),)
        assert victim in sink.document_ids(s3, cfg.bucket, old_file)
        assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)


def test_a_message_failing_in_a_reprocess_keeps_its_copy(es, conn, s3, bundled):
    cfg = bundled
    first = export(es, conn, s3, cfg, DAY)
    (old_file,) = documents(s3, cfg, DAY)
    victim = ids_of(DAY)[4]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    try:
        again = export(es, conn, s3, cfg, DAY, reprocess=True,
                       before_process=lambda: es.delete(index=cfg.messages_index, id=victim, refresh=True))
        assert first.report.status == "completed" and isinstance(again.report, ReconcileError)
        assert sink.document_ids(s3, cfg.bucket, old_file) == [victim]  # the others moved to the new file
        assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)


def test_a_message_failing_when_its_batch_is_cleared_keeps_its_copy(es, conn, s3, bundled, monkeypatch):
    """The worker dies right after recording its batch (before any cleanup), a person clears the batch (no
    reconcile in between), and one message is gone from the cluster by then."""
    from es_export.pipeline import archive

    cfg = bundled
    _, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="cleared")

    def die(*args, **kwargs):
        raise Died()

    monkeypatch.setattr(archive, "prune", die)
    with pytest.raises(Died):
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id="cleared")
    monkeypatch.undo()
    (first_file,) = documents(s3, cfg, DAY)
    victim = ids_of(DAY)[6]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    es.delete(index=cfg.messages_index, id=victim, refresh=True)
    try:
        tracking.reopen_batch(conn, batch.batch_id)
        result = pipeline.process_batch(es, conn, s3, cfg, batch, run_id="cleared")
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)
    assert result.failed == 1
    assert sink.document_ids(s3, cfg.bucket, first_file) == [victim]
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)


class Died(BaseException):
    """The worker process is gone: no except clause of the package runs."""


def test_an_orphan_file_is_swept_once_the_retry_completes_its_messages(es, conn, s3, bundled, monkeypatch):
    cfg = bundled
    params = day_params(DAY)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="orphan", params=params)
    pipeline.extract(es, conn, cfg, job)
    (batch,) = pipeline.plan(conn, cfg, job, params)

    def die(*args, **kwargs):
        raise Died()

    monkeypatch.setattr(tracking, "record_outcomes", die)
    with pytest.raises(Died):  # uploaded its file, died before recording
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    monkeypatch.undo()
    (orphan,) = documents(s3, cfg, DAY)
    # The run timed out; the worker's lease runs out and es_message_retry takes the messages.
    rows(conn, "UPDATE message_tracking SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    rows(conn, "UPDATE batch_progress SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    # Meanwhile one message left the cluster: the retry fails it, and the orphan was never its copy.
    victim = ids_of(DAY)[5]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    es.delete(index=cfg.messages_index, id=victim, refresh=True)
    try:
        summary = retry(es, conn, s3, cfg)
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)
    assert (summary.completed, summary.failed) == (len(ids_of(DAY)) - 1, 1)
    assert orphan not in documents(s3, cfg, DAY)
    assert copies(s3, cfg, DAY) == {m: 1 for m in ids_of(DAY) if m != victim}
    assert rows(conn, "SELECT COUNT(*) FROM object_uploads") == ((0,),)


def test_a_file_of_an_attempt_that_failed_to_record_is_swept(es, conn, s3, bundled, monkeypatch):
    cfg = bundled
    job, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="unrecorded")

    def database_gone(*args, **kwargs):
        raise RuntimeError("MySQL server has gone away")

    monkeypatch.setattr(tracking, "record_outcomes", database_gone)
    with pytest.raises(RuntimeError):
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    monkeypatch.undo()
    (unrecorded,) = documents(s3, cfg, DAY)
    assert rows(conn, "SELECT status FROM batch_progress") == (("failed",),)
    rows(conn, "UPDATE message_tracking SET next_attempt_at = UTC_TIMESTAMP(6)")
    assert retry(es, conn, s3, cfg).completed == len(ids_of(DAY))
    assert unrecorded not in documents(s3, cfg, DAY)
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)


def test_a_file_recorded_before_its_worker_died_keeps_its_documents(es, conn, s3, bundled, monkeypatch):
    cfg = bundled
    job, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="half")

    def die(*args, **kwargs):
        raise Died()

    monkeypatch.setattr(tracking, "finish_batch", die)  # its outcomes are recorded, the batch is not closed
    with pytest.raises(Died):
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    monkeypatch.undo()
    (recorded,) = documents(s3, cfg, DAY)
    rows(conn, "UPDATE batch_progress SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    pipeline.sweep_orphans(conn, s3, cfg)
    assert sorted(sink.document_ids(s3, cfg.bucket, recorded)) == ids_of(DAY)
    assert rows(conn, "SELECT COUNT(*) FROM message_tracking WHERE status = 'completed' AND s3_key = %s",
                recorded) == ((len(ids_of(DAY)),),)


def test_a_file_still_being_written_is_neither_swept_nor_counted(es, conn, s3, cfg):
    cfg = ndjson(cfg)
    job, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="writing")
    attempt = tracking.start_batch(conn, batch.batch_id)
    key = sink.batch_object_key(cfg.prefix, DAY, job.job_id, batch.batch_no, attempt.token)
    tracking.note_uploads(conn, attempt, [key])
    s3.put_object(Bucket=cfg.bucket, Key=key, Body=gzip.compress(json.dumps({"message_id": ids_of(DAY)[0]}).encode()))
    assert pipeline.sweep_orphans(conn, s3, cfg) == 0
    audit = pipeline.audit_days(conn, s3, cfg, [DAY])
    assert (audit.objects, audit.documents, audit.stray_objects) == (0, 0, [])
    assert sink.document_ids(s3, cfg.bucket, key) == [ids_of(DAY)[0]]


def test_reprocess_leaves_one_copy_of_each_message(es, conn, s3, bundled):
    cfg = bundled
    first = export(es, conn, s3, cfg, DAY, batch_size=7)
    before = set(documents(s3, cfg, DAY))
    again = export(es, conn, s3, cfg, DAY, reprocess=True)
    assert (first.report.status, again.report.status) == ("completed", "completed")
    after = documents(s3, cfg, DAY)
    assert len(after) == 1 and set(after).isdisjoint(before)
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)
    assert again.report.documents == again.report.documents_expected == len(ids_of(DAY))


def test_a_document_whose_row_retention_removed_is_kept(conn, s3, cfg):
    cfg = ndjson(cfg)
    old_file = f"{cfg.prefix}/dt={DAY}/batch-0000000001-00000-a001-x{sink.NDJSON_SUFFIX}"
    s3.put_object(Bucket=cfg.bucket, Key=old_file, Body=gzip.compress(b"".join(
        json.dumps({"message_id": m}).encode() + b"\n" for m in ("kept-a", "moved", "failed", "kept-b"))))
    rows(conn, "INSERT INTO message_tracking (message_id, message_ts, status, s3_key) VALUES"
         " ('moved', %s, 'completed', 'elsewhere.ndjson.gz'), ('failed', %s, 'failed', NULL)", DAY, DAY)
    assert pipeline.prune(conn, s3, cfg, [old_file]) == 1
    assert sink.document_ids(s3, cfg.bucket, old_file) == ["kept-a", "failed", "kept-b"]


def test_a_message_moved_to_another_day_leaves_no_copy_behind(es, conn, s3, cfg):
    first = export(es, conn, s3, cfg, DAY)
    assert first.report.status == "completed"
    mover = ids_of(DAY)[1]
    source = es.get(index=cfg.messages_index, id=mover)["_source"]
    moved_ts = datetime(NEXT_DAY.year, NEXT_DAY.month, NEXT_DAY.day, 6, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    es.index(index=cfg.messages_index, id=mover, document={**source, "timestamp": moved_ts}, refresh=True)
    try:
        second = export(es, conn, s3, cfg, NEXT_DAY)
        assert second.report.status == "completed", second.report
        assert sink.object_key(cfg.prefix, DAY, mover) not in documents(s3, cfg, DAY)
        assert copies(s3, cfg, NEXT_DAY)[mover] == 1
    finally:
        es.index(index=cfg.messages_index, id=mover, document=source, refresh=True)


# ---------------------------------------------------------------------------- reconcile


def test_reconcile_names_a_missing_and_a_stray_object_whose_counts_cancel(es, conn, s3, cfg):
    first = export(es, conn, s3, cfg, DAY)
    assert first.report.status == "completed"
    gone = sink.object_key(cfg.prefix, DAY, ids_of(DAY)[2])
    s3.delete_object(Bucket=cfg.bucket, Key=gone)
    stray = f"{sink.day_prefix(cfg.prefix, DAY)}stray.json"
    s3.put_object(Bucket=cfg.bucket, Key=stray, Body=json.dumps({"message_id": "stray"}).encode())
    with pytest.raises(ReconcileError) as raised:
        pipeline.reconcile(es, conn, s3, cfg, first.job)
    assert gone in str(raised.value) and stray in str(raised.value)


def test_reconcile_finds_a_document_missing_from_its_file(es, conn, s3, cfg):
    cfg = ndjson(cfg)
    first = export(es, conn, s3, cfg, DAY)
    (key,) = documents(s3, cfg, DAY)
    body = sink._read(s3, cfg.bucket, key)
    s3.put_object(Bucket=cfg.bucket, Key=key, Body=gzip.compress(b"\n".join(body.splitlines()[1:])))
    with pytest.raises(ReconcileError, match="1 completed message\\(s\\) are missing from the object"):
        pipeline.reconcile(es, conn, s3, cfg, first.job)


def test_reconcile_fails_a_run_with_a_failed_message(es, conn, s3, cfg):
    """The message is gone while its batch runs and back before reconcile counts: only its failure is wrong."""
    victim = ids_of(DAY)[3]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    try:
        run = export(es, conn, s3, cfg, DAY,
                     before_process=lambda: es.delete(index=cfg.messages_index, id=victim, refresh=True),
                     after_process=lambda: es.index(index=cfg.messages_index, id=victim, document=source,
                                                    refresh=True))
        assert isinstance(run.report, ReconcileError) and "1 message(s) of the interval failed" in str(run.report)
        assert rows(conn, "SELECT status FROM job_runs WHERE id = %s", run.job.job_id) == (("failed",),)
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)


def test_reconcile_fails_a_run_whose_source_changed_meanwhile(es, conn, s3, cfg):
    late = f"late-{uuid.uuid4().hex[:6]}"

    def arrives():
        es.index(index=cfg.messages_index, id=late, refresh=True,
                 document={"timestamp": f"{DAY.isoformat()}T12:00:00.000Z", "body": "late"})

    try:
        run = export(es, conn, s3, cfg, DAY, before_process=arrives)
        assert isinstance(run.report, ReconcileError) and "Elasticsearch now holds" in str(run.report)
    finally:
        es.delete(index=cfg.messages_index, id=late, refresh=True)


def test_the_interval_is_start_inclusive_end_exclusive(es, conn, s3, cfg):
    at_start, at_end = f"edge-start-{uuid.uuid4().hex[:6]}", f"edge-end-{uuid.uuid4().hex[:6]}"
    for message_id, day in ((at_start, DAY), (at_end, NEXT_DAY)):
        es.index(index=cfg.messages_index, id=message_id, refresh=True,
                 document={"timestamp": f"{day.isoformat()}T00:00:00.000Z", "body": "edge"})
    try:
        run = export(es, conn, s3, cfg, DAY)
        assert run.report.status == "completed"
        tracked = {r[0] for r in rows(conn, "SELECT message_id FROM message_tracking")}
        assert at_start in tracked and at_end not in tracked
        assert tracked == {*ids_of(DAY), at_start}
    finally:
        for message_id in (at_start, at_end):
            es.delete(index=cfg.messages_index, id=message_id, refresh=True)


# ---------------------------------------------------------------------------- attempts and fences


def test_a_stale_attempt_changes_nothing(es, conn, s3, cfg):
    _, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="stale")
    first = tracking.start_batch(conn, batch.batch_id)
    second = tracking.start_batch(conn, batch.batch_id)
    outcome = Outcome(first.messages[0].row_id, first.messages[0].message_id, True, s3_key="x.json")
    with pytest.raises(StaleAttempt):
        tracking.record_outcomes(conn, first, [outcome])
    conn.rollback()
    with pytest.raises(StaleAttempt):
        tracking.finish_batch(conn, first)
    conn.rollback()
    assert rows(conn, "SELECT COUNT(*) FROM message_tracking WHERE status = 'completed'") == ((0,),)
    # A person clears the batch while the second attempt still runs: it is fenced out too.
    tracking.reopen_batch(conn, batch.batch_id)
    with pytest.raises(StaleAttempt):
        tracking.record_outcomes(conn, second, [outcome])
    conn.rollback()
    third = tracking.start_batch(conn, batch.batch_id)
    assert tracking.record_outcomes(conn, third, [outcome]) == 1


def test_a_batch_that_failed_on_one_receive_is_exported_by_the_next(es, conn, s3, cfg):
    _, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="redelivered")
    tracking.fail_batch(conn, tracking.start_batch(conn, batch.batch_id), "the Lambda ran out of memory")
    result = pipeline.process_batch(es, conn, s3, cfg, batch, run_id="redelivered")
    assert result.completed == len(ids_of(DAY))
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)


def test_a_fenced_out_attempt_leaves_no_file_behind(es, conn, s3, cfg):
    cfg = ndjson(cfg)
    job, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="fenced")
    stale = tracking.start_batch(conn, batch.batch_id)  # a Lambda that timed out after its upload
    key = sink.batch_object_key(cfg.prefix, DAY, job.job_id, batch.batch_no, stale.token)
    tracking.note_uploads(conn, stale, [key])
    s3.put_object(Bucket=cfg.bucket, Key=key, Body=gzip.compress(b"".join(
        json.dumps({"message_id": m}).encode() + b"\n" for m in ids_of(DAY))))
    pipeline.process_batch(es, conn, s3, cfg, batch, run_id="fenced")  # the task's retry
    assert key not in documents(s3, cfg, DAY)
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)


def test_a_batch_delivered_twice_is_exported_once(es, conn, s3, cfg):
    _, batch = support.one_batch(es, conn, cfg, day_params(DAY), run_id="twice")
    first = pipeline.process_batch(es, conn, s3, cfg, batch, run_id="twice")
    again = pipeline.process_batch(es, conn, s3, cfg, batch, run_id="twice")
    assert (first.completed, again.attempted) == (len(ids_of(DAY)), 0)
    assert rows(conn, "SELECT attempts FROM batch_progress") == ((1,),)
    assert copies(s3, cfg, DAY) == dict.fromkeys(ids_of(DAY), 1)


def test_a_failing_message_is_retried_with_backoff_then_dead(conn):
    _, (batch,) = support.planned_job(conn, 1, run_id="dies")
    policy = RetryPolicy(max_attempts=2, base_seconds=60, max_seconds=3600)
    attempt = tracking.start_batch(conn, batch.batch_id)
    tracking.record_outcomes(conn, attempt, [Outcome(attempt.messages[0].row_id, "x", False, error="bad")],
                             policy=policy)
    ((status, attempts, wait),) = rows(conn, "SELECT status, attempts, TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6),"
                                             " next_attempt_at) FROM message_tracking")
    assert (status, attempts) == ("failed", 1) and 55 <= wait <= 60
    tracking.reopen_batch(conn, batch.batch_id)
    attempt = tracking.start_batch(conn, batch.batch_id)
    tracking.fail_batch(conn, attempt, "still bad", policy=policy)
    assert rows(conn, "SELECT status, attempts, next_attempt_at FROM message_tracking") == (("dead", 2, None),)


def test_attempts_count_failures_since_the_last_export(es, conn, s3, cfg):
    """Exported five times (a run and four reprocess runs), then failing once: failed with a retry time, not dead."""
    cfg = replace(cfg, max_attempts=5)
    for _ in range(5):
        assert export(es, conn, s3, cfg, DAY, reprocess=True).report.status == "completed"
    victim = ids_of(DAY)[7]
    source = es.get(index=cfg.messages_index, id=victim)["_source"]
    try:
        export(es, conn, s3, cfg, DAY, reprocess=True,
               before_process=lambda: es.delete(index=cfg.messages_index, id=victim, refresh=True))
    finally:
        es.index(index=cfg.messages_index, id=victim, document=source, refresh=True)
    ((status, attempts, due),) = rows(conn, "SELECT status, attempts, next_attempt_at IS NOT NULL FROM"
                                            " message_tracking WHERE message_id = %s", victim)
    assert (status, attempts, due) == ("failed", 1, 1)
    assert rows(conn, "SELECT DISTINCT attempts FROM message_tracking WHERE message_id <> %s", victim) == ((0,),)


def test_the_retry_job_filter_takes_the_messages_a_job_failed_first(conn):
    first, (batch,) = support.planned_job(conn, 1, run_id="fails-first")
    tracking.fail_batch(conn, tracking.start_batch(conn, batch.batch_id), "cluster away")
    rows(conn, "UPDATE message_tracking SET next_attempt_at = UTC_TIMESTAMP(6)")
    # es_message_retry takes it and fails it again: the message now belongs to the retry's job.
    retry_job = pipeline.open_retry_job(conn, dag_id="es_message_retry", run_id="r1", params=RetryParams())
    (again,) = pipeline.plan_retry(conn, cfg_for_plans(), retry_job, batch_size=10)
    tracking.fail_batch(conn, tracking.start_batch(conn, again.batch_id), "cluster still away")
    rows(conn, "UPDATE message_tracking SET next_attempt_at = UTC_TIMESTAMP(6)")
    rows(conn, "UPDATE job_runs SET status = 'failed'")  # both runs ended
    assert rows(conn, "SELECT job_id, failed_job_id, attempts FROM message_tracking") == (
        (retry_job.job_id, first.job_id, 2),)
    by_alert = pipeline.open_retry_job(conn, dag_id="es_message_retry", run_id="r2", params=RetryParams())
    assert pipeline.plan_retry(conn, cfg_for_plans(), by_alert, batch_size=10, only_job_id=retry_job.job_id) == []
    assert len(pipeline.plan_retry(conn, cfg_for_plans(), by_alert, batch_size=10, only_job_id=first.job_id)) == 1


def cfg_for_plans():
    from es_export.config import ExportConfig

    return ExportConfig(messages_index="m", history_index="h", status_index="s", audit_index="a", bucket="b")


def test_a_message_another_live_run_holds_is_not_claimed_twice(es, conn, s3, cfg):
    params = day_params(DAY)
    first = pipeline.open_job(conn, dag_id="es_message_export", run_id="holder", params=params)
    pipeline.extract(es, conn, cfg, first)
    assert sum(b.size for b in pipeline.plan(conn, cfg, first, params)) == len(ids_of(DAY))
    second = pipeline.open_job(conn, dag_id="es_message_export", run_id="second", params=params)
    pipeline.extract(es, conn, cfg, second)
    assert pipeline.plan(conn, cfg, second, params) == []
    # Once the first run has ended, its unfinished messages are free again.
    rows(conn, "UPDATE job_runs SET status = 'failed' WHERE run_id = 'holder'")
    assert sum(b.size for b in pipeline.plan(conn, cfg, second, params)) == len(ids_of(DAY))


def test_a_retried_plan_says_how_many_messages_its_run_exports(es, conn, s3, cfg):
    params = day_params(DAY)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=f"plan-{uuid.uuid4().hex[:6]}", params=params)
    pipeline.extract(es, conn, cfg, job)
    tracking.claim_for_job(conn, job, reprocess=False)  # the plan's first try died after its claim
    batches = pipeline.plan(conn, cfg, job, params)
    assert sum(b.size for b in batches) == len(ids_of(DAY))
    assert rows(conn, "SELECT to_export FROM job_runs WHERE id = %s", job.job_id) == ((len(ids_of(DAY)),),)


def test_a_per_message_batch_records_each_message_in_its_own_object(es, conn, s3, cfg):
    ran = export(es, conn, s3, cfg, DAY, batch_size=7)
    assert ran.report.status == "completed"
    recorded = dict(rows(conn, "SELECT message_id, s3_key FROM message_tracking WHERE status = 'completed'"))
    assert sorted(recorded) == ids_of(DAY)
    assert {key: sink.document_ids(s3, cfg.bucket, key) for key in recorded.values()} == {
        key: [message_id] for message_id, key in recorded.items()}


# ---------------------------------------------------------------------------- what the cluster may do


def test_a_day_counted_or_scanned_without_a_shard_is_never_exported_short(es, conn, s3, cfg):
    """One index behind the alias answers as a lost shard does: the extract and the count refuse."""
    from es_export import search
    from es_export.errors import PartialResults
    from shard_loss import ShardLossProxy

    alias = f"{cfg.messages_index}-all"
    es.indices.put_alias(index=cfg.messages_index, name=alias)
    try:
        with ShardLossProxy(support.require_env("ES_URL")) as proxy:
            client = search.connect(search.SearchSettings(url=proxy.url))
            proxy.lost = {cfg.messages_index}
            with pytest.raises(PartialResults, match=cfg.messages_index):
                export(es, conn, s3, replace(cfg, messages_index=alias), DAY, client=client)
            with pytest.raises(PartialResults, match=cfg.messages_index):
                pipeline.reconcile(client, conn, s3, cfg, pipeline.open_job(
                    conn, dag_id="es_message_export", run_id="count", params=day_params(DAY)))
    finally:
        es.indices.delete_alias(index=cfg.messages_index, name=alias)
    assert rows(conn, "SELECT COUNT(*) FROM extract_checkpoints WHERE finished") == ((0,),)
    assert documents(s3, cfg, DAY) == {}


def test_one_id_in_two_indices_is_never_tracked_twice_or_moved(es, conn, s3, cfg):
    copy = f"{cfg.messages_index}-copy"
    twin = ids_of(DAY)[8]
    es.index(index=copy, id=twin, document=es.get(index=cfg.messages_index, id=twin)["_source"], refresh=True)
    try:
        with pytest.raises(SourceError, match=f"{twin!r} in '{cfg.messages_index}(-copy)?' and"):
            export(es, conn, s3, replace(cfg, messages_index=f"{cfg.messages_index}*"), DAY)
    finally:
        es.indices.delete(index=copy)


# ---------------------------------------------------------------------------- what a sender may do


@pytest.fixture()
def lambda_env(monkeypatch, cfg):
    """The processing Lambda's environment, as deploy/template.yaml sets it, for the guarantees database."""
    from scenarios import DB

    monkeypatch.setenv("MYSQL_DB", DB)
    monkeypatch.setenv("EXPORT_CONFIG", json.dumps({
        "messages_index": cfg.messages_index, "history_index": cfg.history_index, "status_index": cfg.status_index,
        "audit_index": cfg.audit_index, "bucket": cfg.bucket, "prefix": cfg.prefix, "layout": "ndjson_gzip"}))
    from es_export_lambda import handler

    handler._elasticsearch.cache_clear()
    handler._s3.cache_clear()
    return handler


def payload(batch: Batch, **changes):
    return {"batch": {**batch.as_dict(), "run_id": "r", **changes}}


def test_a_forged_payload_cannot_touch_another_batch(es, conn, s3, cfg, lambda_env):
    cfg = ndjson(cfg)
    params = day_params(DAY, batch_size=len(ids_of(DAY)) // 2 + 1)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="forged", params=params)
    pipeline.extract(es, conn, cfg, job)
    first, victim = pipeline.plan(conn, cfg, job, params)
    # The victim's attempt has uploaded its file and not recorded it yet.
    attempt = tracking.start_batch(conn, victim.batch_id)
    in_flight = sink.batch_object_key(cfg.prefix, DAY, job.job_id, victim.batch_no, attempt.token)
    tracking.note_uploads(conn, attempt, [in_flight])
    s3.put_object(Bucket=cfg.bucket, Key=in_flight, Body=gzip.compress(b'{"message_id": "v"}\n'))
    for forged in (payload(first, batch_no=victim.batch_no), payload(first, job_id=job.job_id + 1)):
        with pytest.raises(ConfigError, match=f"batch {first.batch_id} is batch_no {first.batch_no} of job"):
            lambda_env.process(forged)
    assert rows(conn, "SELECT status, attempts FROM batch_progress WHERE id = %s", first.batch_id) == (("pending", 0),)
    assert list(documents(s3, cfg, DAY)) == [in_flight]
    # The descriptor Airflow planned goes through.
    assert lambda_env.process(payload(first))["completed"] == first.size


def test_a_payload_that_tries_to_change_settings_is_refused(es, conn, s3, cfg, lambda_env):
    _, batch = support.one_batch(es, conn, ndjson(cfg), day_params(DAY), run_id="settings")
    for refused in ({**payload(batch), "settings": {"bucket": "elsewhere"}},
                    {**payload(batch), "expect": {"bucket": "elsewhere"}},
                    {**payload(batch), "expect": {"tracking_database": "other"}}):
        with pytest.raises(ConfigError):
            lambda_env.process(refused)
    assert rows(conn, "SELECT status, attempts FROM batch_progress") == (("pending", 0),)
    assert documents(s3, cfg, DAY) == {}


# ---------------------------------------------------------------------------- the SQS wait


def test_stalls_do_not_count_as_receives(conn):
    job, (batch,) = support.planned_job(conn, 1, run_id="stalls")
    # Queued and never received within the lease: stalled. Queued again, received, and the Lambda timed out.
    tracking.mark_dispatched(conn, [batch.batch_id], lease_seconds=0)
    rows(conn, "UPDATE batch_progress SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    assert tracking.expire_stalled_batch(conn, batch.batch_id)
    tracking.mark_dispatched(conn, [batch.batch_id], lease_seconds=3600)
    tracking.start_batch(conn, batch.batch_id)
    rows(conn, "UPDATE batch_progress SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    assert tracking.expire_stalled_batch(conn, batch.batch_id)
    # Queued a third time: received once, and that receive failed.
    tracking.mark_dispatched(conn, [batch.batch_id], lease_seconds=3600)
    tracking.fail_batch(conn, tracking.start_batch(conn, batch.batch_id), "the Lambda failed")
    progress = tracking.progress_of_job(conn, job.job_id)[batch.batch_id]
    assert (progress.status, progress.receives) == (Status.FAILED, 1)
    assert progress.settled(max_receive=3) is None  # SQS delivers it twice more
    for _ in range(2):
        tracking.fail_batch(conn, tracking.start_batch(conn, batch.batch_id), "the Lambda failed")
    assert tracking.progress_of_job(conn, job.job_id)[batch.batch_id].settled(max_receive=3) == "failed_out"


def test_a_date_nanos_index_exports_every_message_at_its_time(es, conn, s3, cfg):
    """A data stream whose timestamp is date_nanos: each message is tracked on its own day, paged exactly."""
    index = f"gt-nanos-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings={"properties": {"timestamp": {"type": "date_nanos"}}})
    stamps = {f"n{i}": f"{DAY.isoformat()}T0{i}:00:00.123456789Z" for i in range(5)}
    stamps["next"] = f"{NEXT_DAY.isoformat()}T00:00:00.000000001Z"
    for message_id, stamp in stamps.items():
        es.index(index=index, id=message_id, document={"timestamp": stamp})
    es.indices.refresh(index=index)
    try:
        run = export(es, conn, s3, replace(cfg, messages_index=index, scan_page_size=2), DAY)
        assert run.report.status == "completed", run.report
        tracked = dict(rows(conn, "SELECT message_id, message_ts FROM message_tracking"))
        assert set(tracked) == {f"n{i}" for i in range(5)}
        assert tracked["n3"] == datetime(DAY.year, DAY.month, DAY.day, 3, 0, 0, 123000)
    finally:
        es.indices.delete(index=index)
