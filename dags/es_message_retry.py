"""
### Retry failed message exports

Every 15 minutes (`ES_RETRY_SCHEDULE`, a cron expression) this DAG takes the messages whose export
failed and whose next attempt is due (exponential backoff from their attempt count), plus those of
workers that died (expired lease), and exports them again with the same processing code as
`es_message_export`. After `max_attempts` a message becomes `dead` and an alert goes out (a log
line, and an SNS message when `sns_topic_arn` is configured).

Params narrow the selection to one job (`job_id`) or a time range (`start`, `end`);
`revive_dead` takes dead messages too and gives them a fresh set of attempts.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from es_export import pipeline
from es_export.config import RunParams, parse_instant
from es_export.tracking import Job
from es_export_airflow import (
    DATE_OR_DATETIME,
    alert_dead,
    batch_label,
    dispatch,
    failing_fast,
    load_config,
    mysql_connection,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
                        description="Only messages of this job_runs id. Empty: every job."),
        "start": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME,
                       description="Only messages with a timestamp at or after this (UTC)."),
        "end": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME,
                     description="Only messages with a timestamp before this (UTC)."),
        "revive_dead": Param(False, type="boolean", description="Also retry dead messages, with fresh attempts."),
        "dispatch": Param("local", type="string", enum=["local", "lambda", "sqs"],
                          description="Where batches run, as for es_message_export."),
        "batch_size": Param(500, type="integer", minimum=1, maximum=20_000),
    },
    tags=["export", "retry"],
    doc_md=__doc__,
)
def es_message_retry():
    @task(multiple_outputs=False, retries=0)
    def start_job() -> dict:
        """Validate the params and open this run's job_runs row."""
        context = get_current_context()
        p = context["params"]
        with failing_fast():
            start = parse_instant("start", p["start"]) if p.get("start") else None
            end = parse_instant("end", p["end"]) if p.get("end") else None
            params = RunParams(start=start or EPOCH, end=end or datetime.now(UTC) + timedelta(days=1),
                               dispatch=p.get("dispatch") or "local", batch_size=p.get("batch_size") or 500,
                               max_range=timedelta(days=365 * 200))
            with mysql_connection() as conn:
                job = pipeline.open_job(conn, dag_id=context["dag"].dag_id, run_id=context["run_id"], params=params)
        return {"job": job.as_dict(), "batch_size": params.batch_size, "job_filter": p.get("job_id"),
                "dispatch": params.dispatch.value,
                "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
                "revive_dead": bool(p.get("revive_dead"))}

    @task
    def plan(spec: dict) -> list[dict]:
        """Claim the failed messages that are due and cut them into batches."""
        with failing_fast(), mysql_connection() as conn:
            cfg = load_config()
            batches = pipeline.plan_retry(
                conn, cfg, Job.from_dict(spec["job"]), batch_size=spec["batch_size"],
                only_job_id=spec["job_filter"], revive_dead=spec["revive_dead"],
                start=parse_instant("start", spec["start"]) if spec["start"] else None,
                end=parse_instant("end", spec["end"]) if spec["end"] else None)
            return dispatch.hand_out(cfg, batches, run_id=spec["job"]["run_id"], mode=spec["dispatch"])

    @task.sensor(map_index_template="batch {{ batch_label }}", **dispatch.sensor_settings())
    def process(batch: dict) -> PokeReturnValue:
        """Export one batch: here (local), in the Lambda (lambda), or wait for the Lambda behind SQS (sqs)."""
        context = get_current_context()
        context["batch_label"] = batch_label(batch)
        return dispatch.poke(batch, context)

    @task(multiple_outputs=False, trigger_rule=TriggerRule.ALL_DONE, retries=1)
    def summarize(spec: dict | None) -> dict:
        """Record the outcome, alert on dead messages, fail the run if a batch did not finish."""
        if not spec:
            raise AirflowFailException("the run stopped before planning (see plan's log); nothing was retried")
        cfg = load_config()
        with failing_fast(), mysql_connection() as conn:
            summary = pipeline.summarize_retry(conn, Job.from_dict(spec["job"]))
        alert_dead(cfg, summary.job_id, summary.dead_messages, get_current_context())
        if summary.unfinished:
            raise AirflowFailException(f"{summary.unfinished} claimed message(s) were not processed; "
                                       "the next retry run takes them again")
        return {k: v for k, v in vars(summary).items() if k != "dead_messages"}

    spec = start_job()
    process.expand(batch=plan(spec)) >> summarize(spec)


es_message_retry()
