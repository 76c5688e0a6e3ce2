"""How a batch leaves Airflow for the processing Lambda: one synchronous invoke, or a message on its
SQS queue. The Lambda receives the same payload either way (`es_export.payload`) and runs the same
`pipeline.process_batch` as a batch run in the worker.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Connection

from es_export import tracking
from es_export.config import ExportConfig
from es_export.errors import ConfigError, TransientError
from es_export_airflow.connections import AWS_CONN_ID, MYSQL_CONN_ID, mysql_connection


def payload(cfg: ExportConfig, batch: dict[str, Any]) -> dict[str, Any]:
    """What the Lambda receives: the batch descriptor and the settings Airflow expects it to use.

    The Lambda takes its configuration from its own environment only; it refuses a batch when its
    indices, bucket, prefix, layout or tracking database differ from these, and never uses them.
    """
    from es_export.payload import build_payload  # the contract lives with the handler

    return build_payload(cfg, batch, tracking_database=Connection.get(MYSQL_CONN_ID).schema)


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
