"""
### Export messages from Elasticsearch to S3

Every day at 00:00 UTC this DAG starts a run for the previous UTC day; its first task, `settle`, waits
until the day ended `settle_minutes` ago (60 by default), then it exports that day's messages: one JSON document
per message (the message, its history, status and audit trail) at
`s3://<bucket>/<prefix>/dt=YYYY-MM-DD/<encoded message id>.json`, tracked message by message in
MySQL (`job_runs`, `message_tracking`, `batch_progress`).

Trigger it with `start` and `end` (end exclusive) to export another range; `reprocess` re-exports
messages that were already exported; `extract_slices` cuts the extract of a very large day into
time slices, each its own task. The last task, `reconcile`, fails the run when the counts of
Elasticsearch, MySQL and S3 do not add up, or when messages failed (`es_message_retry` retries them);
a failed run sends one alert with its counts and first reasons (SNS when `sns_topic_arn` is set).
Configuration: the Variable `es_message_export_config` (see docs/configuration.md).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue

from es_export.config import MAX_EXTRACT_SLICES
from es_export_airflow import alerts, assets, cataloging, planning, reconciling
from es_export_airflow.batch_sensor import process_task, resumable_sensor_task
from es_export_airflow.settings import batch_params, extract_pool, range_params, sensor_settings


@dag(
    dag_id="es_message_export",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 10, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=int(os.environ.get("ES_EXPORT_MAX_ACTIVE_RUNS", "2")),
    dagrun_timeout=timedelta(hours=12),
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        **range_params("Start of the range to export (UTC, inclusive), e.g. 2024-10-01. Empty: the run's data "
                       "interval.", "End of the range (UTC, exclusive), e.g. 2024-10-02. Empty: the data interval."),
        **batch_params("Where batches run: in the Airflow worker (local), in the processing Lambda, or through "
                       "its SQS queue."),
        "reprocess": Param(False, type="boolean",
                           description="Export again messages that were already exported."),
        "extract_slices": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_EXTRACT_SLICES,
                                description="Cut the extract into this many time slices, each its own task "
                                            "(for days of many millions of messages). Empty: the configuration's "
                                            "extract_slices (1 unless set)."),
    },
    # Late-run alert (ES_EXPORT_DEADLINE_SECONDS after queueing, SNS by default); dagrun_timeout and
    # execution_timeout stay as the floor that stops a stuck run.
    deadline=alerts.late_run_deadline(),
    # One alert per failed run: the run, its interval, its counts and first reasons (SNS when configured).
    on_failure_callback=alerts.run_failed,
    tags=["export", "elasticsearch", "s3"],
    doc_md=__doc__,
)
def es_message_export():
    @resumable_sensor_task(task_id="settle", retries=0, **sensor_settings())
    def settle() -> PokeReturnValue:
        """Wait until the range to export ended settle_minutes ago (a range that ended longer ago: no wait)."""
        return planning.settle(get_current_context())

    @task(multiple_outputs=False, retries=0)
    def start_job() -> dict:
        """Validate the params, migrate the tracking schema, open the job_runs row."""
        return planning.start_export(get_current_context())

    @task
    def extract_slices(spec: dict) -> list[int]:
        """The numbers of the extract's time slices."""
        return planning.extract_slice_numbers(spec)

    @task(multiple_outputs=False, map_index_template="{{ extract_label }}", pool=extract_pool())
    def extract(spec: dict, slice_no: int) -> dict:
        """Stream the message ids of one time slice of the interval into message_tracking."""
        return planning.extract_slice(spec, slice_no, get_current_context())

    @task
    def plan(spec: dict) -> list[dict]:
        """Check that every extract slice finished, then cut the messages to export into batches."""
        return planning.plan_export(spec)

    @task.sensor(trigger_rule=TriggerRule.ALL_DONE, retries=1, outlets=[assets.EXPORTED_DAYS], **sensor_settings())
    def reconcile(spec: dict | None) -> PokeReturnValue:
        """Wait for other runs exporting part of this interval, then compare Elasticsearch, MySQL and S3
        document by document; write the manifest; fail the run on any gap."""
        return reconciling.reconcile_export(spec, get_current_context())

    spec = start_job()
    settle() >> spec
    spec >> cataloging.catalog_task()  # beside the extract: the archive does not wait for its table
    extracted = extract.partial(spec=spec).expand(slice_no=extract_slices(spec))
    batches = plan(spec)
    extracted >> batches
    # reconcile also waits for every extract slice, not only for plan: when one slice fails for good,
    # plan is upstream_failed at once while the other slices may still run.
    checked = reconcile(spec)
    extracted >> checked
    process_task().expand(batch=batches) >> checked


es_message_export()
