"""Running a batch in each dispatch mode: in this worker, in the processing Lambda, through SQS.

Whatever the mode, the batch runs the same `pipeline.process_batch` and records its outcome in
MySQL; the mapped `process` task (a sensor) reports the batch_progress counts. In sqs mode the
sensor waits deferred: a `BatchesSettledTrigger` in the triggerer, whose poll all of a job's waiting
batches share, wakes it when its batch settled.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from airflow.sdk import Connection
from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from es_export import pipeline, tracking
from es_export.config import Dispatch, ExportConfig
from es_export.errors import ConfigError, TransientError
from es_export.model import Batch, Status
from es_export_airflow import metrics
from es_export_airflow.connections import AWS_CONN_ID, MYSQL_CONN_ID, elasticsearch_client, mysql_connection, s3_client
from es_export_airflow.settings import load_config
from es_export_airflow.tasks import TRIGGER_EVENT, failing_fast
from es_export_airflow.triggers import BatchesSettledTrigger

log = logging.getLogger(__name__)

# Longest a batch may take in any mode, including waiting for the Lambda behind SQS.
BATCH_TIMEOUT = timedelta(hours=6)


def sensor_settings() -> dict[str, Any]:
    """How the mapped `process` sensor waits: in reschedule mode, so it holds no worker slot (in sqs mode
    it defers instead, and the triggerer polls every `poke_interval` seconds for it).

    Read when a DAG file is parsed, so `ES_EXPORT_POKE_SECONDS` (default 30) can be set per process.
    """
    return {"mode": "reschedule", "poke_interval": float(os.environ.get("ES_EXPORT_POKE_SECONDS", "30")),
            "timeout": BATCH_TIMEOUT.total_seconds(), "execution_timeout": BATCH_TIMEOUT}


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
        if first_poke_after_a_clear(context):
            _reopen_if_finished(batch)
        if mode is Dispatch.LOCAL:
            with mysql_connection() as conn:
                result = pipeline.process_batch(elasticsearch_client(), conn, s3_client(cfg), cfg,
                                                Batch.from_dict(batch), run_id=batch["run_id"])
            return PokeReturnValue(is_done=True, xcom_value=result.as_dict())
        if mode is Dispatch.LAMBDA:
            return PokeReturnValue(is_done=True, xcom_value=invoke_lambda(cfg, batch))
        return _wait_for_sqs(cfg, batch, context)


def first_poke_after_a_clear(context: Any) -> bool:
    """The first poke of the first try after a person cleared the task.

    Airflow raises max_tries to try_number + retries when a task is cleared, so the first try since
    the latest clear is max_tries - retries + 1 (Airflow's TaskInstance computes it the same way). An
    automatic retry comes after it, and a poke resumed from a deferral or a reschedule is no new try.
    """
    ti = context["ti"]
    first_since_clear = ti.max_tries - (context["task"].retries or 0) + 1
    return (ti.try_number > 1 and ti.try_number == first_since_clear and not context.get("task_reschedule_count")
            and TRIGGER_EVENT not in context)


def _reopen_if_finished(batch: dict[str, Any]) -> None:
    # Only on a clear: a person wants the finished batch exported again. An automatic retry of a task
    # that failed after its batch was recorded (a metric, a superseded-document removal) reports it.
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


def _wait_for_sqs(cfg: ExportConfig, batch: dict[str, Any], context: Any) -> PokeReturnValue:
    if event := context.get(TRIGGER_EVENT):
        log.info("batch %s settled (%s, per the triggerer's poll): checking it", batch["batch_no"], event["settled"])
    with mysql_connection() as conn:
        stalled = tracking.expire_stalled_batch(conn, batch["batch_id"], policy=cfg.retry_policy())
        state = tracking.batch_state(conn, batch["batch_id"])
    if stalled:
        raise TransientError(f"batch {batch['batch_no']} {stalled}; its messages spent an attempt, and the "
                             "task's retry queues the batch again")
    if state["dispatched_at"] is None:  # the plan stopped before sending this one
        send_to_sqs(cfg, [batch])
        _defer_until_settled(cfg, batch, context)
    if state["status"] == Status.COMPLETED:
        seconds = (state["finished_at"] - state["started_at"]).total_seconds() if state["started_at"] else 0.0
        return PokeReturnValue(is_done=True, xcom_value={
            "job_id": state["job_id"], "batch_id": state["batch_id"], "batch_no": state["batch_no"],
            "attempted": state["total"], "completed": state["completed"], "failed": state["failed"],
            "bytes_written": state["bytes_written"], "seconds": seconds})
    if state["status"] == Status.FAILED and state["receives"] >= cfg.sqs_max_receive:
        raise TransientError(f"batch {batch['batch_no']} failed {state['attempts']} time(s) in the Lambda "
                             f"(its message is in the dead-letter queue): {state['last_error']}")
    _defer_until_settled(cfg, batch, context)


def _defer_until_settled(cfg: ExportConfig, batch: dict[str, Any], context: Any) -> NoReturn:
    """Give the worker back until the batch settles; the task then resumes in `execute` and pokes again.

    Waiting in the triggerer, not by rescheduling: a rescheduled poke is a worker interpreter (on
    MWAA a fresh one) and a MySQL connection every poke interval per batch; the triggerer polls all
    of a job's waiting batches with one statement per interval. The wait ends BATCH_TIMEOUT after
    the try started (a deferral keeps the try's start date), as the sensor's own timeout would.
    """
    task: BaseSensorOperator = context["task"]
    remaining = BATCH_TIMEOUT - (datetime.now(UTC) - context["ti"].start_date)
    if remaining <= timedelta(0):
        raise AirflowSensorTimeout(f"batch {batch['batch_no']} is still not done {BATCH_TIMEOUT} after its try "
                                   "started; see its batch_progress row and the Lambda's log")
    log.info("batch %s is not done yet: deferring; the triggerer checks it every %.0f s (at most %s more)",
             batch["batch_no"], task.poke_interval, str(remaining).split(".")[0])
    task.defer(trigger=BatchesSettledTrigger(job_id=batch["job_id"], batch_id=batch["batch_id"],
                                             batch_no=batch["batch_no"], poll_seconds=task.poke_interval,
                                             sqs_max_receive=cfg.sqs_max_receive),
               method_name="execute", timeout=remaining)


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
