"""What a finished batch reports: Airflow stats (StatsD; on MWAA forwarded to CloudWatch) and one
structured log line with its counts.

Metric names, under Airflow's StatsD prefix (`airflow.` by default):
  es_export.messages_exported   counter, messages written to S3
  es_export.messages_failed     counter, messages marked failed (with their reason in MySQL)
  es_export.bytes_written       counter, bytes written to S3
  es_export.batch_duration      timer, seconds one batch took (ms in StatsD)
  es_export.batches             counter, batches finished
  es_export.refresh_lag_seconds gauge, how far es_message_refresh's watermark is behind now (alarm on it)
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from airflow.sdk.observability import stats

log = logging.getLogger("es_export.metrics")


def batch_record(batch: dict[str, Any], result: dict[str, Any], *, dag_id: str) -> dict[str, Any]:
    """The counts of one finished batch; every dispatch mode reports the same keys."""
    return {
        "event": "es_export.batch", "dag_id": dag_id, "run_id": batch.get("run_id"),
        "dispatch": batch.get("dispatch", "local"), "job_id": batch["job_id"], "batch_id": batch["batch_id"],
        "batch_no": batch["batch_no"], "attempted": int(result.get("attempted", 0)),
        "completed": int(result.get("completed", 0)), "failed": int(result.get("failed", 0)),
        "bytes_written": int(result.get("bytes_written", 0)), "seconds": round(float(result.get("seconds", 0)), 3),
    }


def report_batch(batch: dict[str, Any], result: dict[str, Any], *, dag_id: str) -> dict[str, Any]:
    record = batch_record(batch, result, dag_id=dag_id)
    # One JSON object per line, so CloudWatch Logs Insights can filter and sum on its fields.
    log.info("%s", json.dumps(record, sort_keys=True))
    tags = {"dag_id": dag_id, "dispatch": record["dispatch"]}
    stats.incr("es_export.messages_exported", record["completed"], tags=tags)
    stats.incr("es_export.messages_failed", record["failed"], tags=tags)
    stats.incr("es_export.bytes_written", record["bytes_written"], tags=tags)
    stats.incr("es_export.batches", 1, tags=tags)
    stats.timing("es_export.batch_duration", timedelta(seconds=record["seconds"]), tags=tags)
    return record


def report_refresh_lag(seconds: float, *, dag_id: str) -> None:
    stats.gauge("es_export.refresh_lag_seconds", seconds, tags={"dag_id": dag_id})
