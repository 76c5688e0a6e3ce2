"""Alerts that tell a person: a late run, a failed run, dead messages.

Failed run: `run_failed` is the on_failure_callback of both DAGs. Airflow calls it once each time a
run ends failed (a task failed for good, reconcile found a gap or failed messages, dagrun_timeout):
the DAG processor runs it (`dag.test()` in its own process). It writes one log line `RUN FAILED ...`
and publishes one SNS message to the Variable's `sns_topic_arn`, or else to
ES_EXPORT_ALERT_SNS_TOPIC_ARN: the run, its interval, its counts from job_runs and its first reasons.

Late run: a Deadline Alert on the export DAG. The scheduler notices the missed deadline and the
triggerer runs `late_run`: it always writes one log line, then sends through a notifier, SNS by
default. Settings are read when the DAG file is parsed, from the environment (on MWAA: the startup
script or the environment's configuration):

  ES_EXPORT_DEADLINE_SECONDS        how long after a run is queued it counts as late (default 6 h;
                                    "off": no deadline, needed for `airflow dags test`)
  ES_EXPORT_ALERT_SNS_TOPIC_ARN     the SNS topic of the default notifier (and of failed-run alerts
                                    when the Variable has no sns_topic_arn); unset: log line only
  ES_EXPORT_ALERT_NOTIFIER          another notifier class, e.g.
                                    airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier
  ES_EXPORT_ALERT_NOTIFIER_KWARGS   JSON keyword arguments for that class; "{message}" in a string
                                    value is replaced by the alert text
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from es_export import tracking
from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export_airflow.connections import AWS_CONN_ID, mysql_connection
from es_export_airflow.settings import load_config

DEFAULT_DEADLINE = timedelta(hours=6)
SNS_NOTIFIER = "airflow.providers.amazon.aws.notifications.sns.SnsNotifier"
# How many reasons a failed-run alert lists (the rest are in job_runs, message_tracking, the task logs).
FIRST_REASONS = 5
# The job_runs columns a failed-run alert reports, in this order.
JOB_COUNTS = ("es_count", "ids_found", "ids_new", "to_export", "batches", "completed", "exported_by_others",
              "failed", "objects")

log = logging.getLogger("es_export.alerts")


def deadline_seconds() -> int | None:
    """None when the alert is switched off ("off" or "0")."""
    raw = os.environ.get("ES_EXPORT_DEADLINE_SECONDS", "").strip().lower()
    if not raw:
        return int(DEFAULT_DEADLINE.total_seconds())
    if raw in ("off", "0"):
        return None
    if not raw.isdigit():
        raise ConfigError(f"ES_EXPORT_DEADLINE_SECONDS must be a whole number of seconds, or off; got {raw!r}")
    return int(raw)


def notifier_settings() -> dict[str, Any]:
    """Which notifier the late-run callback uses, and its keyword arguments (no secrets: those stay in
    the notifier's Airflow connection)."""
    path = os.environ.get("ES_EXPORT_ALERT_NOTIFIER", "") or SNS_NOTIFIER
    if path == SNS_NOTIFIER:
        topic = os.environ.get("ES_EXPORT_ALERT_SNS_TOPIC_ARN", "")
        kwargs = {"aws_conn_id": AWS_CONN_ID, "target_arn": topic, "subject": "es_message_export: late run",
                  "message": "{message}"} if topic else {}
        return {"notifier": path if topic else "", "notifier_kwargs": kwargs}
    raw = os.environ.get("ES_EXPORT_ALERT_NOTIFIER_KWARGS", "") or "{}"
    try:
        kwargs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ES_EXPORT_ALERT_NOTIFIER_KWARGS must be a JSON object: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("ES_EXPORT_ALERT_NOTIFIER_KWARGS must be a JSON object of the notifier's arguments")
    return {"notifier": path, "notifier_kwargs": kwargs}


def late_run_deadline() -> DeadlineAlert | None:
    """The export DAG's deadline: finished within ES_EXPORT_DEADLINE_SECONDS of being queued.

    `airflow dags test` and `dag.test()` fail on any DAG with a deadline in Airflow 3.3.1 (they look
    the alert up by id in a DAG object that holds the alert itself), so set
    ES_EXPORT_DEADLINE_SECONDS=off there; the scheduler is not affected.
    """
    seconds = deadline_seconds()
    if seconds is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=seconds),
        callback=AsyncCallback(late_run, kwargs=notifier_settings()),
        name="es_message_export late",
    )


def late_run_message(context: dict[str, Any] | None) -> str:
    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    return (f"{run.get('dag_id', 'es_message_export')} run {run.get('dag_run_id', '?')} is late: queued at "
            f"{run.get('queued_at')}, still {run.get('state')} at its deadline {deadline.get('deadline_time')}. "
            "Open the run in Airflow, or the status page, to see which batch is behind.")


async def late_run(notifier: str = "", notifier_kwargs: dict[str, Any] | None = None,
                   context: dict[str, Any] | None = None) -> str:
    """The Deadline Alert callback (runs in the triggerer)."""
    message = late_run_message(context)
    log.error("LATE RUN %s", message)
    if not notifier:
        return message
    module, _, name = notifier.rpartition(".")
    notifier_class = getattr(importlib.import_module(module), name)
    kwargs = {k: v.replace("{message}", message) if isinstance(v, str) else v
              for k, v in (notifier_kwargs or {}).items()}
    # The notifier's synchronous path, in a thread: it needs no async AWS client (aiobotocore) and
    # every notifier has one.
    await asyncio.to_thread(notifier_class(**kwargs), dict(context or {}))
    return message


def run_failed(context: Mapping[str, Any]) -> str:
    """The on_failure_callback of both DAGs: one log line and one SNS message per failed run.

    Reads job_runs with the short timeouts of the listener (the DAG processor runs this), and says
    so in the message when the tracking database cannot be read, instead of sending nothing. An
    error of SNS itself propagates: Airflow logs it and counts `dag.callback_exceptions`.
    """
    dag_id, run_id = context["dag"].dag_id, str(context["run_id"])
    job, failures, problems = None, [], []
    try:
        with mysql_connection(quick=True) as conn:
            job = tracking.job_of_run(conn, dag_id, run_id)
            if job:
                failures = tracking.failures(conn, int(job["id"]), limit=FIRST_REASONS)
    except Exception as exc:  # noqa: BLE001 - the alert goes out without the counts
        problems.append(f"the tracking database could not be read ({exc}); counts unknown")
    topic = os.environ.get("ES_EXPORT_ALERT_SNS_TOPIC_ARN", "")
    try:
        topic = load_config().sns_topic_arn or topic
    except Exception as exc:  # noqa: BLE001 - a bad Variable must not silence the alert
        problems.append(f"the Variable es_message_export_config could not be read ({exc})")
    ti = context.get("ti")
    message = failed_run_message(
        dag_id=dag_id, run_id=run_id, reason=str(context.get("reason") or "failed"), dag_run=context.get("dag_run"),
        failed_task=_task_label(ti) if ti is not None else None, job=job, failures=failures, problems=problems)
    log.error("RUN FAILED %s", message)
    if topic:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        SnsNotifier(aws_conn_id=AWS_CONN_ID, target_arn=topic, subject=f"{dag_id}: run failed"[:100],
                    message=message).notify(dict(context))
    return message


def _task_label(ti: Any) -> str:
    map_index = getattr(ti, "map_index", -1)
    return f"{ti.task_id}[{map_index}]" if map_index is not None and map_index >= 0 else str(ti.task_id)


def failed_run_message(*, dag_id: str, run_id: str, reason: str, dag_run: Any = None, failed_task: str | None = None,
                       job: Mapping[str, Any] | None = None, failures: list[dict[str, Any]] | None = None,
                       problems: list[str] | None = None) -> str:
    """The text of a failed-run alert: the run and its interval, the counts of its job_runs row, the
    first FIRST_REASONS reasons."""
    if job:
        start, end = job["interval_start"], job["interval_end"]
    else:
        start, end = (getattr(dag_run, name, None) for name in ("data_interval_start", "data_interval_end"))
    interval = f"{_utc(start)} .. {_utc(end)}" if start and end else "unknown"
    why = {"task_failure": "a task failed", "timed_out": "the run exceeded its dagrun_timeout",
           "all_tasks_deadlocked": "no task could run"}.get(reason, reason)
    # The listener creates the row when the run starts; start_job "opens" it (started_at, counts).
    opened = bool(job and job.get("started_at"))
    reasons = list(problems or [])
    if failed_task:
        reasons.append(f"task {failed_task} failed (its log says why)")
    if not opened and not problems:
        reasons.append("the run stopped before start_job opened its job (see the log of settle or start_job): "
                       "nothing was exported")
    last_error = str((job or {}).get("last_error") or "")
    if last_error and not last_error.startswith("Airflow run failed"):  # the listener's note says no more
        reasons.append(last_error)
    reasons += [f"message {f['message_id']!r} (failed or dead, attempt {f['attempts']}): {f['error']}"
                for f in failures or []]
    if job and opened:
        counts = ", ".join(f"{name} {job.get(name) if job.get(name) is not None else '-'}" for name in JOB_COUNTS)
        counts = f"job_runs id {job['id']}, status {job['status']}: {counts}"
    else:
        counts = "none (the job was never opened)"
    lines = [f"{dag_id} run {run_id} failed: {why}.", f"dag_id: {dag_id}", f"run_id: {run_id}",
             f"interval: {interval}", f"counts: {counts}", "first reasons:"]
    lines += [f"- {r[:500]}" for r in reasons[:FIRST_REASONS]] or ["- none recorded; see the run's task logs"]
    if job and job.get("airflow_url"):
        lines.append(f"run: {job['airflow_url']}")
    return "\n".join(lines)


def _utc(value: Any) -> str:
    """job_runs times are naive UTC; Airflow's are aware."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def alert_dead(cfg: ExportConfig, job_id: int, dead: list[dict[str, Any]], context: Any) -> None:
    """Tell a person that messages ran out of attempts: a log line always, SNS when a topic is set."""
    if not dead:
        return
    sample = ", ".join(repr(d["message_id"]) for d in dead[:10])
    message = (f"{len(dead)} message(s) of job {job_id} are dead after {cfg.max_attempts} attempts "
               f"(e.g. {sample}); last error: {dead[0]['error']}. Revive them with es_message_retry "
               "and revive_dead=true once the cause is fixed.")
    logging.getLogger("es_export.alerts").error(message)
    if cfg.sns_topic_arn:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        SnsNotifier(aws_conn_id=AWS_CONN_ID, target_arn=cfg.sns_topic_arn, subject="es_message_export: dead messages",
                    message=message).notify(context)
