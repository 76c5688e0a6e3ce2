"""
### Retry failed message exports

Every 15 minutes (`ES_RETRY_SCHEDULE`, a cron expression) this DAG takes the messages whose export
failed and whose next attempt is due (exponential backoff from their attempt count), plus those of
workers that died (expired lease), and exports them again with the same processing code as
`es_message_export`. After `max_attempts` a message becomes `dead` and an alert goes out (a log
line, and an SNS message when `sns_topic_arn` is configured).

Params narrow the selection to the messages one job failed first (`job_id`, the id an alert names)
or a time range (`start`, `end`);
`revive_dead` takes dead messages too and gives them a fresh set of attempts.

Beside the retry, `purge_tracking` deletes completed tracking rows older than
`tracking_retention_days` (90 by default; 0 or null keeps them), in small chunks.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task

from es_export_airflow import alerts, planning, reconciling
from es_export_airflow.batch_sensor import process_task
from es_export_airflow.settings import batch_params, range_params


@dag(
    dag_id="es_message_retry",
    schedule=CronTriggerTimetable(os.environ.get("ES_RETRY_SCHEDULE", "*/15 * * * *"), timezone="UTC"),
    start_date=datetime(2024, 10, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=1)},
    params={
        "job_id": Param(None, type=["null", "integer"], minimum=1,
                        description="Only messages this job_runs id failed first (the job an alert names). "
                                    "Empty: every job."),
        **range_params("Only messages with a timestamp at or after this (UTC).",
                       "Only messages with a timestamp before this (UTC)."),
        "revive_dead": Param(False, type="boolean", description="Also retry dead messages, with fresh attempts."),
        **batch_params("Where batches run, as for es_message_export."),
    },
    # One alert per failed run, as for es_message_export.
    on_failure_callback=alerts.run_failed,
    tags=["export", "retry"],
    doc_md=__doc__,
)
def es_message_retry():
    @task(multiple_outputs=False, retries=0)
    def start_job() -> dict:
        """Validate the params and open this run's job_runs row."""
        return planning.start_retry(get_current_context())

    @task
    def plan(spec: dict) -> list[dict]:
        """Claim the failed messages that are due and cut them into batches."""
        return planning.plan_retry(spec)

    @task(multiple_outputs=False, trigger_rule=TriggerRule.ALL_DONE, retries=1)
    def summarize(spec: dict | None) -> dict:
        """Sweep orphan files, record the outcome, alert on dead messages; fail the run when a batch did not
        finish or a message went dead (failed ones the next retry takes again leave it green)."""
        return reconciling.summarize_retry(spec, get_current_context())

    @task
    def purge_tracking() -> int:
        """Delete completed tracking rows older than tracking_retention_days, in small chunks."""
        return reconciling.purge_tracking()

    spec = start_job()
    process_task().expand(batch=plan(spec)) >> summarize(spec)
    purge_tracking()  # on its own: a long purge never delays a retry, nor a failed retry the purge


es_message_retry()
