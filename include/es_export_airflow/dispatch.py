"""Running a batch in each dispatch mode: in this worker, in the processing Lambda, through SQS.

Whatever the mode, the batch runs the same `pipeline.process_batch` and records its outcome in
MySQL; the mapped `process` task (a sensor in reschedule mode) reports the batch_progress counts.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from typing import Any

from airflow.sdk import Connection
from airflow.sdk.bases.sensor import PokeReturnValue

from es_export import pipeline, tracking
from es_export.config import Dispatch, ExportConfig
from es_export.errors import ConfigError, TransientError
from es_export.model import Batch, Status
from es_export_airflow import metrics
from es_export_airflow.connections import AWS_CONN_ID, MYSQL_CONN_ID, elasticsearch_client, mysql_connection, s3_client
from es_export_airflow.settings import load_config
from es_export_airflow.tasks import failing_fast

log = logging.getLogger(__name__)

# Longest a batch may take in any mode, including waiting for the Lambda behind SQS.
BATCH_TIMEOUT = timedelta(hours=6)


def sensor_settings() -> dict[str, Any]:
    """How the mapped `process` sensor waits: in reschedule mode, so it holds no worker slot.

    Read when a DAG file is parsed, so `ES_EXPORT_POKE_SECONDS` (default 30) can be set per process.
    """
    return {"mode": "reschedule", "poke_interval": float(os.environ.get("ES_EXPORT_POKE_SECONDS", "30")),
            "timeout": BATCH_TIMEOUT.total_seconds()}


def payload(cfg: ExportConfig, batch: dict[str, Any]) -> dict[str, Any]:
    """What the Lambda receives: the batch descriptor and the settings Airflow expects it to use.

    The Lambda takes its configuration from its own environment only; it refuses a batch when its
    indices, bucket, prefix, layout or tracking database differ from these, and never uses them.
    """
    from es_export.payload import build_payload  # the contract lives with the handler

    return build_payload(cfg, batch, tracking_database=Connection.get(MYSQL_CONN_ID).schema)


def poke(batch: dict[str, Any], context: Any) -> PokeReturnValue:
    """One poke of the mapped `process` sensor; a finished batch reports its metrics."""
    result = _poke(batch, context)
    if result.is_done:
        metrics.report_batch(batch, result.xcom_value or {}, dag_id=context["dag"].dag_id)
    return result


def _poke(batch: dict[str, Any], context: Any) -> PokeReturnValue:
    cfg = load_config()
    mode = Dispatch(batch.get("dispatch", Dispatch.LOCAL))
    with failing_fast():
        if first_poke_of_a_later_try(context):
            _reopen_if_finished(batch)
        if mode is Dispatch.LOCAL:
            with mysql_connection() as conn:
                result = pipeline.process_batch(elasticsearch_client(), conn, s3_client(cfg), cfg,
                                                Batch.from_dict(batch), run_id=batch["run_id"])
            return PokeReturnValue(is_done=True, xcom_value=result.as_dict())
        if mode is Dispatch.LAMBDA:
            return PokeReturnValue(is_done=True, xcom_value=invoke_lambda(cfg, batch))
        return _wait_for_sqs(cfg, batch)


def first_poke_of_a_later_try(context: Any) -> bool:
    """The first poke of a later try: a retry after a failure, or a person cleared the task."""
    return context["ti"].try_number > 1 and not context.get("task_reschedule_count")


def _reopen_if_finished(batch: dict[str, Any]) -> None:
    # Airflow never re-runs a successful task by itself, so a finished batch here was cleared by a
    # person who wants it exported again; an unfinished one just resumes where it stopped.
    with mysql_connection() as conn:
        if tracking.batch_state(conn, batch["batch_id"])["status"] == Status.COMPLETED:
            reopened = tracking.reopen_batch(conn, batch["batch_id"])
            log.info("batch %s was cleared after it finished: exporting its %d message(s) again",
                     batch["batch_no"], reopened)


# How much longer than the function's timeout the invoke waits for its answer.
LAMBDA_READ_MARGIN_SECONDS = 30


def invoke_lambda(cfg: ExportConfig, batch: dict[str, Any]) -> dict[str, Any]:
    """One synchronous invoke; a function error fails the task, so Airflow retries the batch."""
    from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook
    from botocore.config import Config

    # Exactly one invoke per task try: botocore's "max_attempts" counts retries, "total_max_attempts"
    # counts the first call too. A read timeout fails the try; the next try's attempt fences this one.
    config = Config(read_timeout=cfg.lambda_timeout_seconds + LAMBDA_READ_MARGIN_SECONDS, connect_timeout=10,
                    retries={"total_max_attempts": 1})
    hook = LambdaHook(aws_conn_id=AWS_CONN_ID, config=config)
    resp = hook.invoke_lambda(function_name=cfg.lambda_function_name, invocation_type="RequestResponse",
                              payload=json.dumps(payload(cfg, batch)))
    body = json.loads(resp["Payload"].read() or b"{}")
    if resp.get("FunctionError") and body.get("errorType") == "ConfigError":
        # The function's configuration differs from Airflow's, or the payload was refused: retrying cannot help.
        raise ConfigError(f"Lambda {cfg.lambda_function_name} refused batch {batch['batch_no']}: "
                          f"{body.get('errorMessage')}")
    if resp.get("FunctionError"):
        raise TransientError(f"Lambda {cfg.lambda_function_name} failed on batch {batch['batch_no']}: "
                             f"{body.get('errorType')}: {body.get('errorMessage')}")
    return body


def send_to_sqs(cfg: ExportConfig, batches: list[dict[str, Any]]) -> None:
    """Queue every batch with SendMessageBatch (10 a call) and note when each was sent."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    if not batches:
        return
    sqs = SqsHook(aws_conn_id=AWS_CONN_ID).get_conn()
    queue_url = sqs.get_queue_url(QueueName=cfg.sqs_queue_name)["QueueUrl"]
    for i in range(0, len(batches), 10):
        chunk = batches[i:i + 10]
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(b["batch_id"]), "MessageBody": json.dumps(payload(cfg, b))} for b in chunk])
        if resp.get("Failed"):
            raise TransientError(f"SQS refused {len(resp['Failed'])} batch message(s): {resp['Failed'][0]}")
        with mysql_connection() as conn:
            tracking.mark_dispatched(conn, [b["batch_id"] for b in chunk], lease_seconds=cfg.dispatch_lease_seconds)


def _wait_for_sqs(cfg: ExportConfig, batch: dict[str, Any]) -> PokeReturnValue:
    with mysql_connection() as conn:
        stalled = tracking.expire_stalled_batch(conn, batch["batch_id"], policy=cfg.retry_policy())
        state = tracking.batch_state(conn, batch["batch_id"])
    if stalled:
        raise TransientError(f"batch {batch['batch_no']} {stalled}; its messages spent an attempt, and the "
                             "task's retry queues the batch again")
    if state["dispatched_at"] is None:  # the plan stopped before sending this one
        send_to_sqs(cfg, [batch])
        return PokeReturnValue(is_done=False)
    if state["status"] == Status.COMPLETED:
        seconds = (state["finished_at"] - state["started_at"]).total_seconds() if state["started_at"] else 0.0
        return PokeReturnValue(is_done=True, xcom_value={
            "job_id": state["job_id"], "batch_id": state["batch_id"], "batch_no": state["batch_no"],
            "attempted": state["total"], "completed": state["completed"], "failed": state["failed"],
            "bytes_written": state["bytes_written"], "seconds": seconds})
    if state["status"] == Status.FAILED and state["attempts"] >= cfg.sqs_max_receive:
        raise TransientError(f"batch {batch['batch_no']} failed {state['attempts']} time(s) in the Lambda "
                             f"(its message is in the dead-letter queue): {state['last_error']}")
    return PokeReturnValue(is_done=False)


def wait_for_other_runs(conn: Any, job: Any) -> bool:
    """True while other live runs still export part of this run's interval (each one is logged)."""
    others = pipeline.others_still_exporting(conn, job)
    for share in others:
        log.info("waiting: %d message(s) of this interval are being exported by %s", share.messages, share.label())
    return bool(others)


def hand_out(cfg: ExportConfig, batches: list[Batch], *, run_id: str, mode: str) -> list[dict[str, Any]]:
    """The descriptors the mapped `process` task expands over; in SQS mode the batches are queued now."""
    descriptors = [{**b.as_dict(), "run_id": run_id, "dispatch": Dispatch(mode).value} for b in batches]
    if Dispatch(mode) is Dispatch.SQS:
        send_to_sqs(cfg, descriptors)
    return descriptors
