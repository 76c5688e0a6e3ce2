"""The last steps of a run, one function per task: wait for other runs exporting part of the interval,
reconcile and announce the exported days (export); summarize the retry; purge old tracking rows."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from es_export import pipeline
from es_export.config import RunParams
from es_export.model import Job
from es_export.tracking import Connection
from es_export_airflow import alerts, assets
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
        raise AirflowFailException("the run stopped before extract (see start_job's log); nothing was exported")
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


def purge_tracking() -> int:
    """Delete completed tracking rows older than tracking_retention_days, in small chunks."""
    with failing_fast(), mysql_connection() as conn:
        return pipeline.purge_tracking(conn, load_config())
