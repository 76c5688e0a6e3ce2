"""What the package reads from Airflow and from the environment: the Variable es_message_export_config,
the trigger params, and the settings a DAG file reads when it is parsed (pools, poke interval)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, Variable

from es_export.config import MAX_BATCH_SIZE, Dispatch, ExportConfig, RunParams

CONFIG_VARIABLE = "es_message_export_config"
# What the trigger forms accept for start and end: a date, or a date and time with an optional zone.
DATE_OR_DATETIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"

# The Airflow pool every batch (mapped `process` task) runs in, so that however many runs and
# backfills are live, at most its number of slots of batches query Elasticsearch at once.
# ES_EXPORT_BATCH_POOL names another pool; `make airflow` (devstack/airflow.sh) creates it with
# BATCH_POOL_SLOTS slots, the documented default size.
BATCH_POOL = "es_export_batches"
BATCH_POOL_SLOTS = 8

# Longest a batch may take in any mode, including waiting for the Lambda behind SQS.
BATCH_TIMEOUT = timedelta(hours=6)


def load_config() -> ExportConfig:
    """The Variable `es_message_export_config` (JSON, every key optional) as an ExportConfig."""
    values = Variable.get(CONFIG_VARIABLE, default={}, deserialize_json=True)
    return ExportConfig.from_mapping(values)


def run_params(context: Mapping[str, Any], cfg: ExportConfig) -> RunParams:
    """The run's params, with the data interval where start or end is empty; a dispatch mode the layout
    cannot run in is refused."""
    params = RunParams.resolve(dict(context["params"]), context.get("data_interval_start"),
                               context.get("data_interval_end"), max_range_days=cfg.max_range_days,
                               extract_slices=cfg.extract_slices, max_batch_size=cfg.max_batch_size,
                               max_extract_slices=cfg.max_extract_slices)
    cfg.check_dispatch(params.dispatch)
    return params


def range_params(start_help: str, end_help: str) -> dict[str, Param]:
    """The `start` and `end` params of a trigger form (UTC dates or datetimes, both optional)."""
    return {"start": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME, description=start_help),
            "end": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME, description=end_help)}


def batch_params(dispatch_help: str) -> dict[str, Param]:
    """The `dispatch` and `batch_size` params both DAGs share."""
    return {
        "dispatch": Param("local", type="string", enum=[d.value for d in Dispatch], description=dispatch_help),
        "batch_size": Param(500, type="integer", minimum=1, maximum=MAX_BATCH_SIZE,
                            description="Messages per batch; raised automatically to stay within max_batches."),
    }


def batch_pool() -> str:
    """The pool of the `process` tasks: ES_EXPORT_BATCH_POOL, read when a DAG file is parsed, or BATCH_POOL.

    The pool must exist: Airflow 3.3.1 does not warn at parse time, and its scheduler leaves a task
    whose pool is missing `scheduled` for ever, logging "Tasks using non-existent pool ..." each loop.
    """
    return os.environ.get("ES_EXPORT_BATCH_POOL") or BATCH_POOL


def extract_pool() -> str:
    """The pool of the export's `extract` slices: ES_EXPORT_EXTRACT_POOL, read when a DAG file is parsed, or
    the batch pool.

    Each slice holds a point-in-time context on the cluster while it runs, so slices must be capped like
    batches, backfills included. By default they share the batch pool: one cap on what reads the cluster
    at once, and an upgrade needs no new pool (a task whose pool is missing waits, `scheduled`, for ever).
    """
    return os.environ.get("ES_EXPORT_EXTRACT_POOL") or batch_pool()


def sensor_settings() -> dict[str, Any]:
    """How the mapped `process` sensor and `reconcile` wait: in reschedule mode, so they hold no worker
    slot (in sqs mode `process` defers instead, and the triggerer polls every `poke_interval` seconds).

    Read when a DAG file is parsed, so `ES_EXPORT_POKE_SECONDS` (default 30) can be set per process.
    """
    return {"mode": "reschedule", "poke_interval": float(os.environ.get("ES_EXPORT_POKE_SECONDS", "30")),
            "timeout": BATCH_TIMEOUT.total_seconds(), "execution_timeout": BATCH_TIMEOUT}


def refresh_schedule() -> str | None:
    """es_message_refresh's cron expression: ES_REFRESH_SCHEDULE, read when the DAG file is parsed (hourly by
    default; "off" or "none": only runs triggered by hand)."""
    value = os.environ.get("ES_REFRESH_SCHEDULE", "0 * * * *").strip()
    return None if value.lower() in ("off", "none", "null", "") else value
