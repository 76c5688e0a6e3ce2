"""Plan: open the run's job, claim what it must export, cut that into batches (also for retries)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from es_export import tracking
from es_export.config import ExportConfig, RetryParams, RunParams, check_batch_size
from es_export.errors import ConfigError, TooManyRuns
from es_export.model import Batch, Job, Status
from es_export.tracking import Connection

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def open_job(conn: Connection, *, dag_id: str, run_id: str, params: RunParams,
             max_live_runs: int | None = None) -> Job:
    """Migrate the schema if needed and get the job_runs row of this run; TooManyRuns, before anything
    changed, when `max_live_runs` runs of the DAG are exporting already (its own earlier tries do not count)."""
    tracking.migrate(conn)
    lock = f"job-start:{dag_id}"  # two runs starting at once count each other
    tracking.object_lock(conn, lock)
    try:
        live = tracking.live_runs(conn, dag_id, other_than=run_id) if max_live_runs else []
        if max_live_runs and len(live) >= max_live_runs:
            raise TooManyRuns(dag_id, live, max_live_runs)
        return tracking.start_job(conn, dag_id=dag_id, run_id=run_id, start=params.start, end=params.end,
                                  dispatch=params.dispatch.value, batch_size=params.batch_size,
                                  reprocess=params.reprocess)
    finally:
        tracking.object_unlock(conn, lock)


def plan(conn: Connection, cfg: ExportConfig, job: Job, params: RunParams) -> list[Batch]:
    """Batches of the messages this run must export; at most cfg.max_batches of them."""
    to_export = tracking.claim_for_job(conn, job, reprocess=params.reprocess)
    size = _batch_size(cfg, to_export, params.batch_size)
    batches = tracking.plan_batches(conn, job, batch_size=size)
    tracking.update_job(conn, job.job_id, batches=len(batches), to_export=to_export)
    log.info("plan job=%s to_export=%d batch_size=%d batches=%d", job.job_id, to_export, size, len(batches))
    return batches


def open_retry_job(conn: Connection, *, dag_id: str, run_id: str, params: RetryParams) -> Job:
    """The job_runs row of an es_message_retry run; its interval is the time range it retries
    (from the epoch to tomorrow when the run has none)."""
    tracking.migrate(conn)
    return tracking.start_job(conn, dag_id=dag_id, run_id=run_id, start=params.start or EPOCH,
                              end=params.end or datetime.now(UTC) + timedelta(days=1),
                              dispatch=params.dispatch.value, batch_size=params.batch_size, reprocess=False)


def plan_retry(conn: Connection, cfg: ExportConfig, job: Job, *, batch_size: int, only_job_id: int | None = None,
               start: datetime | None = None, end: datetime | None = None, revive_dead: bool = False) -> list[Batch]:
    """Batches of the failed messages whose next attempt is due (and dead ones when reviving)."""
    claimed = tracking.claim_failed(conn, job, only_job_id=only_job_id, start=start, end=end,
                                    revive_dead=revive_dead, limit=cfg.retry_max_messages)
    size = _batch_size(cfg, claimed, batch_size)
    batches = tracking.plan_batches(conn, job, batch_size=size)
    tracking.update_job(conn, job.job_id, batches=len(batches), to_export=claimed, ids_found=claimed)
    log.info("retry job=%s claimed=%d batches=%d revive_dead=%s", job.job_id, claimed, len(batches), revive_dead)
    return batches


def plan_taken(conn: Connection, cfg: ExportConfig, job: Job, *, batch_size: int) -> list[Batch]:
    """Batches of what the job took already (es_message_refresh's find_changes)."""
    taken = tracking.job_status_counts(conn, job.job_id).get(Status.PENDING, 0)
    size = _batch_size(cfg, taken, batch_size)
    batches = tracking.plan_batches(conn, job, batch_size=size)
    tracking.update_job(conn, job.job_id, batches=len(batches), to_export=taken, ids_found=taken)
    log.info("refresh job=%s taken=%d batches=%d", job.job_id, taken, len(batches))
    return batches


def _batch_size(cfg: ExportConfig, total: int, batch_size: int) -> int:
    check_batch_size(batch_size, cfg.max_batch_size)
    size = tracking.effective_batch_size(total, batch_size, cfg.max_batches)
    if size > cfg.max_batch_size:
        raise ConfigError(f"{total} messages do not fit in max_batches={cfg.max_batches} batches of at most "
                          f"max_batch_size={cfg.max_batch_size}; export a shorter range (a backfill splits "
                          "it into days) or raise max_batches (at most 1024)")
    return size
