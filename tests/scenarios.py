"""The steps of runs as the DAGs' tasks call the core library, and what S3 then holds: for the guarantees tier."""

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from es_export import pipeline, sink
from es_export.config import RetryParams, RunParams
from es_export.errors import ReconcileError
from seed_data import SeedConfig

SEED = SeedConfig(messages=60, days=2, start=date(2025, 6, 1), seed=11, large=0)
# Its own database, so `make mutation` can run beside a test run of the same tier.
DB = os.environ.get("GUARANTEES_DB", "tracking_test_guarantees")


@dataclass
class Run:
    job: object
    batches: list
    report: object  # a Report, or the ReconcileError


def day_params(day: date, **kw) -> RunParams:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return RunParams(start=start, end=start + timedelta(days=1), **kw)


def export(es, conn, s3, cfg, day, *, run_id=None, reprocess=False, batch_size=500, before_process=None,
           after_process=None, client=None) -> Run:
    """One run of es_message_export over the day, step by step as its tasks call the core (the extract
    through `client` when one is given, e.g. a proxy answering as a lost shard)."""
    params = day_params(day, reprocess=reprocess, batch_size=batch_size)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
                            params=params)
    pipeline.extract(client or es, conn, cfg, job)
    batches = pipeline.plan(conn, cfg, job, params)
    if before_process:
        before_process()
    for batch in batches:
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    if after_process:
        after_process()
    try:
        return Run(job, batches, pipeline.reconcile(es, conn, s3, cfg, job))
    except ReconcileError as exc:
        return Run(job, batches, exc)


def documents(s3, cfg, day) -> dict[str, list[str]]:
    """Every document S3 holds for the day: key -> message ids in it."""
    return {key: sink.document_ids(s3, cfg.bucket, key)
            for key in sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day))}


def copies(s3, cfg, day) -> dict[str, int]:
    """How many documents S3 holds for each message of the day."""
    counts: dict[str, int] = {}
    for ids in documents(s3, cfg, day).values():
        for message_id in ids:
            counts[message_id] = counts.get(message_id, 0) + 1
    return counts


def rows(conn, sql, *params):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        found = cur.fetchall()
    conn.commit()
    return found


def retry(es, conn, s3, cfg, *, run_id=None, revive_dead=False):
    """One run of es_message_retry: plan the due failures, process them, sweep orphans, summarize."""
    params = RetryParams()
    job = pipeline.open_retry_job(conn, dag_id="es_message_retry", run_id=run_id or f"retry-{uuid.uuid4().hex[:8]}",
                                  params=params)
    batches = pipeline.plan_retry(conn, cfg, job, batch_size=500, revive_dead=revive_dead)
    for batch in batches:
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    pipeline.sweep_orphans(conn, s3, cfg)
    return pipeline.summarize_retry(conn, job)


def refresh(es, conn, s3, cfg, *, run_id=None, since=None, stop_after_batches=None):
    """One run of es_message_refresh, step by step as its tasks call the core; with `stop_after_batches`
    it dies after that many batches (Airflow then marks its run failed), and its summarize still runs."""
    from es_export import tracking
    from es_export.config import RefreshParams

    job = pipeline.open_refresh_job(es, conn, cfg, dag_id="es_message_refresh",
                                    run_id=run_id or f"refresh-{uuid.uuid4().hex[:8]}",
                                    params=RefreshParams(since=since))
    found = pipeline.find_changes(es, conn, cfg, job)
    for n, batch in enumerate(pipeline.plan_taken(conn, cfg, job, batch_size=1)):
        if stop_after_batches is not None and n >= stop_after_batches:
            tracking.update_job(conn, job.job_id, status="failed")
            break
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    return pipeline.finish_refresh(conn, s3, cfg, job, vars(found))


def touch_history(es, cfg, message_id: str, event: str) -> None:
    """A history document for the message, written now (the change a refresh looks for)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    es.index(index=cfg.history_index, document={"message_id": message_id, "timestamp": now, "event": event},
             refresh=True)
