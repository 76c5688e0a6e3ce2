"""Airflow Assets: each successful export announces the days it exported, so downstream DAGs can be
scheduled on them.

The days are known only when a run ends, so the export's `reconcile` task declares one asset alias,
`es_message_export_days`, and adds an asset per exported day to it: `s3://<bucket>/<prefix>/dt=YYYY-MM-DD/`.
A downstream DAG is scheduled on the alias (every exported day) or on one day's asset.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from es_export import pipeline, sink
from es_export.config import ExportConfig
from es_export.model import Job

EXPORTED_DAYS = AssetAlias("es_message_export_days")


def announce_exported_days(context: Any, cfg: ExportConfig, job: Job, report: pipeline.Report) -> list[str]:
    """Add one asset event per day of the run's interval to the alias; returns their URIs.

    A run that exported nothing announces nothing: the run that exported the messages did (two runs
    of one day, or a rerun of a complete day), so a downstream DAG is not triggered again for a day
    that did not change, and two runs finishing together do not both create the day's asset (which
    Airflow's API server refuses for one of them with a unique-constraint error, failing that run).
    """
    if not report.exported_this_run:
        return []
    uris = []
    for day in pipeline.days_of(job):
        uri = sink.day_uri(cfg.bucket, cfg.prefix, day)
        context["outlet_events"][EXPORTED_DAYS].add(
            Asset(uri), extra={"run_id": job.run_id, "job_id": job.job_id, "day": day.isoformat(),
                               "messages_in_interval": report.completed})
        uris.append(uri)
    return uris
