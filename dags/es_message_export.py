"""
### Export messages from Elasticsearch to S3

Every day at 00:00 UTC this DAG exports the messages of the previous UTC day: one JSON document
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
from typing import Any, cast

from airflow.sdk import CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from es_export import pipeline
from es_export.config import MAX_EXTRACT_SLICES, RunParams
from es_export.model import Job
from es_export_airflow import alerts, assets, dispatch
from es_export_airflow.connections import elasticsearch_client, mysql_connection, s3_client
from es_export_airflow.settings import load_config, run_params
from es_export_airflow.tasks import batch_params, batch_sensor, failing_fast, range_params


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
    @task(multiple_outputs=False, retries=0)
    def start_job() -> dict:
        """Validate the params, migrate the tracking schema, open the job_runs row."""
        context = get_current_context()
        with failing_fast():
            cfg = load_config()
            params = run_params(context, cfg)
            with mysql_connection() as conn:
                job = pipeline.open_job(conn, dag_id=context["dag"].dag_id, run_id=context["run_id"], params=params)
        return {"job": job.as_dict(), "params": params.as_dict()}

    @task
    def extract_slices(spec: dict) -> list[int]:
        """The numbers of the extract's time slices (Airflow maps only over a whole task's return value)."""
        return list(range(RunParams.from_dict(spec["params"]).extract_slices))

    @task(multiple_outputs=False, map_index_template="{{ extract_label }}")
    def extract(spec: dict, slice_no: int) -> dict:
        """Stream the message ids of the interval (or of one time slice of it) into message_tracking."""
        job, count = Job.from_dict(spec["job"]), RunParams.from_dict(spec["params"]).extract_slices
        part = pipeline.slices_of(job, count)[slice_no]
        cast("dict[str, Any]", get_current_context())["extract_label"] = part.label()
        with failing_fast(), mysql_connection() as conn:
            result = pipeline.extract(elasticsearch_client(), conn, load_config(), job, part)
        return {"slice": slice_no + 1, "ids_found": result.ids_found, "ids_new": result.ids_new}

    @task
    def plan(spec: dict) -> list[dict]:
        """Check that every extract slice finished, then cut the messages to export into batches; only
        descriptors go through XCom."""
        with failing_fast(), mysql_connection() as conn:
            cfg, params, job = load_config(), RunParams.from_dict(spec["params"]), Job.from_dict(spec["job"])
            pipeline.finish_extract(conn, job, params.extract_slices)
            batches = pipeline.plan(conn, cfg, job, params)
            return dispatch.hand_out(cfg, batches, run_id=spec["job"]["run_id"], mode=params.dispatch)

    @task.sensor(trigger_rule=TriggerRule.ALL_DONE, retries=1, outlets=[assets.EXPORTED_DAYS],
                 **dispatch.sensor_settings())
    def reconcile(spec: dict | None) -> PokeReturnValue:
        """Wait for other runs still exporting part of this interval, then compare Elasticsearch, MySQL
        and S3 document by document; write the manifest; fail the run on any gap."""
        if not spec:  # a skip here would turn the run green although nothing was exported
            raise AirflowFailException("the run stopped before extract (see start_job's log); nothing was exported")
        cfg, job = load_config(), Job.from_dict(spec["job"])
        with failing_fast(), mysql_connection() as conn:
            unfinished = pipeline.unfinished_slices(conn, job, RunParams.from_dict(spec["params"]).extract_slices)
            if unfinished:
                raise AirflowFailException(f"the extract did not finish: slice(s) {unfinished} (map index(es) "
                                           f"{[n - 1 for n in unfinished]} of the extract task; see their logs); "
                                           "nothing was exported")
            if dispatch.wait_for_other_runs(conn, job):
                return PokeReturnValue(is_done=False)
            try:
                report = pipeline.reconcile(elasticsearch_client(), conn, s3_client(cfg), cfg, job)
            finally:
                alerts.alert_dead(cfg, job.job_id, pipeline.dead_messages(conn, job), get_current_context())
        assets.announce_exported_days(get_current_context(), cfg, job, report)
        return PokeReturnValue(is_done=True, xcom_value={k: v for k, v in vars(report).items() if k != "failures"})

    spec = start_job()
    extracted = extract.partial(spec=spec).expand(slice_no=extract_slices(spec))
    batches = plan(spec)
    extracted >> batches
    # reconcile also waits for every extract slice, not only for plan: when one slice fails for good,
    # plan is upstream_failed at once while the other slices may still run.
    checked = reconcile(spec)
    extracted >> checked
    batch_sensor().expand(batch=batches) >> checked


es_message_export()
