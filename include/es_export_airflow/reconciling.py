"""The last steps of a run, one function per task: wait for other runs exporting part of the interval,
reconcile and announce the exported days (export); summarize the retry and the refresh; purge old
tracking rows."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from es_export import pipeline
from es_export.config import RunParams
from es_export.model import Job
from es_export.tracking import Connection
from es_export_airflow import alerts, assets, metrics
from es_export_airflow.connections import elasticsearch_client, mysql_connection, s3_client
from es_export_airflow.failures import failing_fast
from es_export_airflow.planning import Spec
from es_export_airflow.settings import load_config

log = logging.getLogger(__name__)


def reconcile_export(spec: Spec | None, context: MutableMapping[str, Any]) -> PokeReturnValue:
    """Once no other run exports part of this interval, compare Elasticsearch, MySQL and S3 document by
    document and write the manifest; alert on dead messages; announce the exported days. Fails the run
    on any gap, on failed messages, and when the run stopped before its extract finished."""
    if not spec:  # a skip here would turn the run green although nothing was exported
        raise AirflowFailException("the run stopped before extract (see the log of settle or start_job); nothing was "
                                   "exported")
    job = Job.from_dict(spec["job"])
    with failing_fast(), mysql_connection() as conn:
        cfg = load_config()
        pipeline.check_extract_finished(conn, job, RunParams.from_dict(spec["params"]).extract_slices)
        if wait_for_other_runs(conn, job):
            return PokeReturnValue(is_done=False)
        alerts.alert_dead(cfg, job.job_id, pipeline.dead_messages(conn, job), context)
        report = pipeline.reconcile(elasticsearch_client(), conn, s3_client(cfg), cfg, job)
    assets.announce_exported_days(context, cfg, job, report)
    return PokeReturnValue(is_done=True, xcom_value=report.brief())


def wait_for_other_runs(conn: Connection, job: Job) -> bool:
    """True while other live runs still export part of this run's interval (each one is logged)."""
    others = pipeline.others_still_exporting(conn, job)
    for share in others:
        log.info("waiting: %d message(s) of this interval are being exported by %s", share.messages, share.label())
    return bool(others)


def summarize_retry(spec: Spec | None, context: MutableMapping[str, Any]) -> dict[str, Any]:
    """Sweep orphan files, record the outcome, alert on dead messages; fail the run when a batch did not
    finish or a message went dead (failed ones the next retry takes again leave it green)."""
    if not spec:
        raise AirflowFailException("the run stopped before planning (see plan's log); nothing was retried")
    with failing_fast(), mysql_connection() as conn:
        cfg = load_config()
        pipeline.sweep_orphans(conn, s3_client(cfg), cfg)
        summary = pipeline.summarize_retry(conn, Job.from_dict(spec["job"]))
    alerts.alert_dead(cfg, summary.job_id, summary.dead_messages, context)
    if summary.unfinished:
        raise AirflowFailException(f"{summary.unfinished} claimed message(s) were not processed; "
                                   "the next retry run takes them again")
    if summary.dead:  # a person must act: the run is red (and the failed-run alert fires too)
        raise AirflowFailException(f"{summary.dead} message(s) ran out of attempts and are dead (reasons in "
                                   "message_tracking.last_error); fix the cause, then run es_message_retry "
                                   "with revive_dead=true")
    return summary.brief()


def summarize_refresh(spec: Spec | None, found: dict[str, Any] | None) -> dict[str, Any]:
    """Record the outcome and move the watermark; report how far behind it is (a gauge); fail the run when
    the search for changes or a batch did not finish (the watermark then stays), or when the watermark is
    older than refresh_max_lag_minutes (the failed-run alert then says the archive is falling behind)."""
    if not spec:
        raise AirflowFailException("the run stopped before it looked for changes (see start_job's log)")
    job = Job.from_dict(spec["job"])
    with failing_fast(), mysql_connection() as conn:
        cfg = load_config()
        summary = pipeline.finish_refresh(conn, s3_client(cfg), cfg, job, found)
    if summary.watermark:
        lag = (datetime.now(UTC) - datetime.fromisoformat(summary.watermark)).total_seconds()
        metrics.report_refresh_lag(lag, dag_id=job.dag_id)
    if found is None or summary.unfinished:
        raise AirflowFailException(f"the search for changes failed (see find_changes' log) or {summary.unfinished} "
                                   "message(s) this refresh took were not exported; the watermark stays, so the next "
                                   "run looks at the same changes again")
    if summary.lag_minutes > (cfg.refresh_max_lag_minutes or float("inf")):
        raise AirflowFailException(f"the archive is {summary.lag_minutes:.0f} minutes behind its source (watermark "
                                   f"{summary.watermark}), more than refresh_max_lag_minutes="
                                   f"{cfg.refresh_max_lag_minutes}; see the logs of earlier es_message_refresh runs")
    return summary.brief()


def purge_tracking() -> int:
    """Delete completed tracking rows older than tracking_retention_days, in small chunks."""
    with failing_fast(), mysql_connection() as conn:
        return pipeline.purge_tracking(conn, load_config())
