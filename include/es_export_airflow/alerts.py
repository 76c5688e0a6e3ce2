"""Late-run alerts: a Deadline Alert on the export DAG whose callback tells a person.

The scheduler notices the missed deadline and the triggerer runs `late_run`: it always writes one
log line, then sends through a notifier, SNS by default. Settings are read when the DAG file is
parsed, from the environment (on MWAA: the startup script or the environment's configuration):

  ES_EXPORT_DEADLINE_SECONDS        how long after a run is queued it counts as late (default 6 h;
                                    "off": no deadline, needed for `airflow dags test`)
  ES_EXPORT_ALERT_SNS_TOPIC_ARN     the SNS topic of the default notifier; unset: log line only
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
from datetime import timedelta
from typing import Any

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export_airflow.connections import AWS_CONN_ID

DEFAULT_DEADLINE = timedelta(hours=6)
SNS_NOTIFIER = "airflow.providers.amazon.aws.notifications.sns.SnsNotifier"

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
