"""
### Bring exported messages up to date with their source

Every hour (`ES_REFRESH_SCHEDULE`, a cron expression; `off` turns the schedule off) this DAG looks at
the related documents (history, status, audit) written or changed since its watermark, by each
related index's change-time field (`related_changed_field`, or per index `related_changed_fields`),
and exports again exactly the exported messages whose source changed: per-message objects are
overwritten in place, NDJSON gets new files and the old documents are removed. A message whose
source did not change is not rewritten. Past days (`refresh_lookback_days`) whose cluster holds more
messages than are tracked are extracted again, and the late messages exported.

`since` (UTC) looks at changes from that instant instead of the watermark. The watermark moves only
when a run finished everything it took; a run falling behind by more than `refresh_max_lag_minutes`
fails and alerts. Configuration: the Variable `es_message_export_config` (see docs/configuration.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task

from es_export_airflow import alerts, planning, reconciling
from es_export_airflow.batch_sensor import process_task
from es_export_airflow.settings import DATE_OR_DATETIME, batch_params, refresh_schedule


@dag(
    dag_id="es_message_refresh",
    schedule=CronTriggerTimetable(refresh_schedule(), timezone="UTC") if refresh_schedule() else None,
    start_date=datetime(2024, 10, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=1)},
    params={
        "since": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME,
                       description="Look at changes from this instant (UTC). Empty: since the last refresh."),
        **batch_params("Where batches run, as for es_message_export."),
    },
    on_failure_callback=alerts.run_failed,
    tags=["export", "refresh"],
    doc_md=__doc__,
)
def es_message_refresh():
    @task(multiple_outputs=False, retries=0)
    def start_job() -> dict:
        """Validate the params and open the run's job over its window of change times."""
        return planning.start_refresh(get_current_context())

    @task(multiple_outputs=False)
    def find_changes(spec: dict) -> dict:
        """Take the exported messages whose source changed in the window, and late messages."""
        return planning.find_changes(spec)

    @task
    def plan(spec: dict) -> list[dict]:
        """Cut what find_changes took into batches."""
        return planning.plan_refresh(spec)

    @task(multiple_outputs=False, trigger_rule=TriggerRule.ALL_DONE, retries=1)
    def summarize(spec: dict | None, found: dict | None) -> dict:
        """Record the outcome, move the watermark, report the lag; fail when something did not finish."""
        return reconciling.summarize_refresh(spec, found)

    spec = start_job()
    found = find_changes(spec)
    batches = plan(spec)
    found >> batches
    process_task().expand(batch=batches) >> summarize(spec, found)


es_message_refresh()
