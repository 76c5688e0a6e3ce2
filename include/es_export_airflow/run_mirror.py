"""An Airflow listener that keeps job_runs in step with the DAG runs of both DAGs.

Registered by the plugin in plugins/es_export_plugin.py. The scheduler calls it when a run starts
and ends; the api-server calls it when a person marks a run failed or successful in the UI or the
REST API. It must never hurt the scheduler:

- no DDL: when job_runs (or its Airflow columns) is missing, it logs and skips; `start_job` migrates
  the schema, and the run's next state change writes the row;
- short timeouts (connections.QUICK_TIMEOUTS: 3 s to connect, 5 s per read or write), so a tracking
  database that hangs costs a state change seconds, never minutes;
- every error is logged and swallowed: the next state change writes the row again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow.listeners import hookimpl

from es_export import tracking
from es_export.model import AirflowRun
from es_export_airflow.connections import mysql_connection

DAG_IDS = {"es_message_export", "es_message_retry", "es_message_refresh"}
# MySQL errors of a schema older than the listener: no such table, unknown column.
SCHEMA_MISSING = {1146, 1054}

log = logging.getLogger("es_export.run_mirror")


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    mirror(dag_run, "running", msg)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    mirror(dag_run, "success", msg)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    mirror(dag_run, "failed", msg)


def run_url(dag_id: str, run_id: str) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def airflow_run(dag_run: Any, state: str, msg: str = "") -> AirflowRun:
    # Runs without a data interval (triggered with no logical date) still need a placeholder
    # interval; start_job replaces it with the range the run really exports.
    placeholder = dag_run.run_after or dag_run.queued_at or datetime.now(UTC)
    return AirflowRun(
        dag_id=dag_run.dag_id, run_id=dag_run.run_id, state=state,
        try_number=int(getattr(dag_run, "clear_number", 0) or 0) + 1,
        start=dag_run.start_date, end=dag_run.end_date if state != "running" else None,
        url=run_url(dag_run.dag_id, dag_run.run_id),
        interval_start=dag_run.data_interval_start or placeholder,
        interval_end=dag_run.data_interval_end or placeholder, note=msg or "",
    )


def mirror(dag_run: Any, state: str, msg: str = "") -> None:
    if dag_run.dag_id not in DAG_IDS:
        return
    try:
        run = airflow_run(dag_run, state, msg)
        with mysql_connection(quick=True) as conn:
            tracking.mirror_airflow_run(conn, run)
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        if exc.args and exc.args[0] in SCHEMA_MISSING:
            log.warning("job_runs is not migrated yet (%s); run %s of %s not recorded as %s: start_job migrates "
                        "the schema and the next state change records the run", exc.args[-1],
                        getattr(dag_run, "run_id", "?"), getattr(dag_run, "dag_id", "?"), state)
            return
        log.exception("could not record run %s of %s as %s in job_runs; the next state change will",
                      getattr(dag_run, "run_id", "?"), getattr(dag_run, "dag_id", "?"), state)
