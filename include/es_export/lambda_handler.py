"""Entry point of the processing Lambda: `es_export.lambda_handler.handler`.

It runs exactly the core's `pipeline.process_batch`, for one batch per direct invoke
(`dispatch=lambda`) or one batch per SQS record (`dispatch=sqs`, reporting partial batch item
failures so only the failed records return to the queue). No Airflow here; PyMySQL as the driver.

Settings come from the environment:
  ES_URL (and ES_USERNAME / ES_PASSWORD), MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_DB, and the
  password either in MYSQL_PASSWORD or, better, in AWS Secrets Manager: MYSQL_SECRET_ARN (a secret
  whose value is the password, or JSON with a "password" key). EXPORT_CONFIG: a JSON object of
  ExportConfig fields (indices, bucket, prefix, ...). S3 uses the runtime's credentials.
A payload's "settings" may override ExportConfig fields and the tracking database name.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from es_export import pipeline
from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export.tracking import Batch

log = logging.getLogger(__name__)
logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Direct invoke: {"batch": {...descriptor...}, "settings": {...}} -> the batch's result.

    SQS event: {"Records": [...]} whose bodies are such payloads -> {"batchItemFailures": [...]}.
    """
    if "Records" in event:
        return _handle_sqs(event["Records"])
    return process(event)


def process(payload: dict[str, Any]) -> dict[str, Any]:
    """Export one batch; raises when the batch cannot proceed (the invoker retries it)."""
    if "batch" not in payload:
        raise ConfigError("the payload has no 'batch': send {'batch': {job_id, batch_id, batch_no, size, "
                          "run_id}, 'settings': {...}}")
    settings = dict(payload.get("settings") or {})
    database = settings.pop("tracking_database", None)
    cfg = ExportConfig.from_mapping({**_env_config(), **settings})
    batch = payload["batch"]
    conn = _mysql(database)
    try:
        result = pipeline.process_batch(_elasticsearch(), conn, _s3(cfg.upload_concurrency), cfg,
                                        Batch.from_dict(batch), run_id=batch.get("run_id", ""))
    finally:
        conn.close()
    return result.as_dict()


def _handle_sqs(records: list[dict[str, Any]]) -> dict[str, Any]:
    failures = []
    for record in records:
        try:
            process(json.loads(record["body"]))
        except Exception as exc:  # noqa: BLE001 - reported per record; SQS redelivers only these
            log.exception("record %s failed: %s", record.get("messageId"), exc)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def _env_config() -> dict[str, Any]:
    raw = os.environ.get("EXPORT_CONFIG", "")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"EXPORT_CONFIG must be a JSON object of configuration keys: {exc}") from None


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set; the Lambda needs it (see lambda_handler)")
    return value


@lru_cache(maxsize=1)
def _mysql_password() -> str:
    """From Secrets Manager when MYSQL_SECRET_ARN is set (fetched once per container), else MYSQL_PASSWORD."""
    arn = os.environ.get("MYSQL_SECRET_ARN")
    if not arn:
        return _required("MYSQL_PASSWORD")
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    try:
        value = json.loads(secret)
    except json.JSONDecodeError:
        return secret
    if isinstance(value, dict) and "password" in value:
        return str(value["password"])
    raise ConfigError(f"secret {arn} holds JSON without a 'password' key")


def _mysql(database: str | None) -> Any:
    import pymysql

    return pymysql.connect(host=_required("MYSQL_HOST"), port=int(os.environ.get("MYSQL_PORT", "3306")),
                           user=_required("MYSQL_USER"), password=_mysql_password(),
                           database=database or _required("MYSQL_DB"), charset="utf8mb4", connect_timeout=10)


@lru_cache(maxsize=1)
def _elasticsearch() -> Any:
    """Cached per container: warm invocations reuse the connection pool."""
    from elasticsearch import Elasticsearch

    auth = None
    if os.environ.get("ES_USERNAME"):
        auth = (os.environ["ES_USERNAME"], os.environ.get("ES_PASSWORD", ""))
    return Elasticsearch(_required("ES_URL"), basic_auth=auth, request_timeout=120, retry_on_timeout=True)


@lru_cache(maxsize=4)
def _s3(concurrency: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5},
                                            max_pool_connections=max(10, concurrency)))


def describe() -> dict[str, Any]:
    """The configuration this container would use (no secrets): for a smoke test."""
    return asdict(ExportConfig.from_mapping(_env_config()))
