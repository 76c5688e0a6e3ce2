"""Entry point of the processing Lambda: `es_export.lambda_handler.handler`.

It runs exactly the core's `pipeline.process_batch`, for one batch per direct invoke
(`dispatch=lambda`) or one batch per SQS record (`dispatch=sqs`, reporting partial batch item
failures so only the failed records return to the queue). No Airflow here; PyMySQL as the driver.

Settings come from the environment, and only from there:
  ES_URL (and ES_USERNAME / ES_PASSWORD), MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_DB, and the
  password either in MYSQL_PASSWORD or, better, in AWS Secrets Manager: MYSQL_SECRET_ARN (a secret
  whose value is the password, or JSON with a "password" key). EXPORT_CONFIG: a JSON object of
  ExportConfig fields (indices, bucket, prefix, ...). S3 uses the runtime's credentials. LOG_LEVEL.

A payload is {"batch": {job_id, batch_id, batch_no, size, run_id}, "expect": {...}}. It can change
nothing the function reads or writes: whoever may send to the queue must not be able to copy an
index the function can read into the export prefix, or write into another tracking database. So a
payload with any other key ("settings" of earlier versions included) is refused, naming the keys.
"expect" holds what Airflow believes the function uses (`build_payload` fills it from the Variable
es_message_export_config and the mysql_tracking connection); a value that differs is refused,
naming the setting, the function's value and Airflow's, never used instead of the environment.
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
from es_export.errors import ConfigError, StaleAttempt
from es_export.model import Batch

log = logging.getLogger(__name__)

BATCH_KEYS = ("job_id", "batch_id", "batch_no", "size")  # required; "run_id" is optional
# What Airflow may tell the function it expects, and where the function's value comes from. These
# decide which documents are read and where results go; tuning (page sizes, concurrency) and the
# retry policy are the function's own.
EXPECTABLE = {
    "messages_index": "EXPORT_CONFIG", "history_index": "EXPORT_CONFIG", "status_index": "EXPORT_CONFIG",
    "audit_index": "EXPORT_CONFIG", "message_id_field": "EXPORT_CONFIG", "bucket": "EXPORT_CONFIG",
    "prefix": "EXPORT_CONFIG", "layout": "EXPORT_CONFIG", "tracking_database": "MYSQL_DB",
}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Direct invoke: {"batch": {...descriptor...}, "expect": {...}} -> the batch's result.

    SQS event: {"Records": [...]} whose bodies are such payloads -> {"batchItemFailures": [...]}.
    """
    # Here, not at import: importing the module (a test, a script, Airflow) must not change the root logger.
    logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    if "Records" in event:
        return _handle_sqs(event["Records"], context)
    return process(event, lease_seconds=_lease_seconds(context))


def build_payload(cfg: ExportConfig, batch: dict[str, Any], *, tracking_database: str | None) -> dict[str, Any]:
    """What the sender puts in an invoke or a queue message: the batch and what it expects the function uses."""
    expect = _expectable(cfg, tracking_database)
    if not tracking_database:
        del expect["tracking_database"]
    return {"batch": {k: batch[k] for k in (*BATCH_KEYS, "run_id")}, "expect": expect}


def _expectable(cfg: ExportConfig, tracking_database: str | None) -> dict[str, Any]:
    """The values of EXPECTABLE as they travel in JSON (every one a string; a Layout as its value)."""
    values = {name: str(getattr(cfg, name)) for name in EXPECTABLE if name != "tracking_database"}
    return {**values, "tracking_database": tracking_database}


def _lease_seconds(context: Any) -> int | None:
    """How long this invocation may hold a batch: the time it has left, plus a minute.

    Once that has passed without a result the invocation is dead (timed out, out of memory), and
    Airflow's `process` task fails the batch as stalled instead of waiting hours for it.
    """
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() // 1000 + 60 if remaining else None


def process(payload: dict[str, Any], *, lease_seconds: int | None = None) -> dict[str, Any]:
    """Export one batch; raises when the batch cannot proceed (the invoker retries it).

    Everything about the payload and the environment is checked before any connection is opened,
    so a refused payload exports nothing and touches no tracking row.
    """
    batch, run_id, expect = _parse(payload)
    cfg = ExportConfig.from_mapping(_env_config())
    database = _required("MYSQL_DB")
    _check_expected(cfg, database, expect)
    conn = _mysql(database)
    try:
        result = pipeline.process_batch(_elasticsearch(), conn, _s3(cfg.upload_concurrency), cfg, batch,
                                        run_id=run_id, lease_seconds=lease_seconds or cfg.lambda_timeout_seconds + 60)
    finally:
        conn.close()
    return result.as_dict()


def _parse(payload: Any) -> tuple[Batch, str, dict[str, Any]]:
    if not isinstance(payload, dict):
        raise ConfigError(f"the payload must be a JSON object, got {type(payload).__name__}")
    refused = sorted(k for k in payload if k not in ("batch", "expect"))
    settings = payload.get("settings")
    if isinstance(settings, dict) and settings:  # name each override, so the sender sees what was refused
        refused = [k for k in refused if k != "settings"] + [f"settings.{k}" for k in sorted(settings)]
    if refused:
        raise ConfigError(
            f"the payload carries key(s) the function does not accept: {refused}. The function takes its "
            "configuration (indices, bucket, prefix, tracking database, ...) only from its environment "
            "(EXPORT_CONFIG, MYSQL_DB); a payload is {'batch': {job_id, batch_id, batch_no, size, run_id}, "
            "'expect': {...}}. Nothing was exported")
    if "batch" not in payload:
        raise ConfigError("the payload has no 'batch': send {'batch': {job_id, batch_id, batch_no, size, "
                          "run_id}, 'expect': {...}}")
    raw = payload["batch"]
    if not isinstance(raw, dict):
        raise ConfigError(f"the payload's 'batch' must be an object, got {raw!r}")
    unknown = sorted(set(raw) - {*BATCH_KEYS, "run_id"})
    missing = [k for k in BATCH_KEYS if k not in raw]
    if unknown or missing:
        raise ConfigError(f"the payload's 'batch' must have exactly {[*BATCH_KEYS]} and optionally 'run_id'; "
                          f"unknown: {unknown}, missing: {missing}")
    for key in BATCH_KEYS:
        if not isinstance(raw[key], int) or isinstance(raw[key], bool):
            raise ConfigError(f"batch.{key} must be an integer, got {raw[key]!r}")
    run_id = raw.get("run_id", "")
    if not isinstance(run_id, str):
        raise ConfigError(f"batch.run_id must be a string, got {run_id!r}")
    expect = payload.get("expect") or {}
    if not isinstance(expect, dict):
        raise ConfigError(f"the payload's 'expect' must be an object, got {expect!r}")
    unknown = sorted(set(expect) - set(EXPECTABLE))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in the payload's 'expect'; known keys: {sorted(EXPECTABLE)}")
    return Batch.from_dict(raw), run_id, expect


def _check_expected(cfg: ExportConfig, database: str, expect: dict[str, Any]) -> None:
    """Refuse to run on settings other than those the sender expects; never take them from the payload."""
    actual = _expectable(cfg, database)
    differ = [name for name, value in expect.items() if actual[name] != value]
    if differ:
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "the processing Lambda")
        details = "; ".join(f"{name}: the function has {actual[name]!r}, Airflow expects {expect[name]!r}"
                            for name in differ)
        env_vars = sorted({EXPECTABLE[name] for name in differ})
        raise ConfigError(
            f"the configuration of {function} differs from Airflow's: {details}. Set "
            f"{' and '.join(env_vars)} in the environment of {function} (or change the Variable "
            "es_message_export_config / the mysql_tracking connection) so they agree. Nothing was exported")


def _handle_sqs(records: list[dict[str, Any]], context: Any = None) -> dict[str, Any]:
    failures = []
    for record in records:
        try:
            process(json.loads(record["body"]), lease_seconds=_lease_seconds(context))
        except StaleAttempt as exc:
            # A newer attempt owns the batch (the queue delivered twice): redelivering cannot help.
            log.warning("record %s: %s", record.get("messageId"), exc)
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


def _mysql(database: str) -> Any:
    import pymysql

    return pymysql.connect(host=_required("MYSQL_HOST"), port=int(os.environ.get("MYSQL_PORT", "3306")),
                           user=_required("MYSQL_USER"), password=_mysql_password(),
                           database=database, charset="utf8mb4", connect_timeout=10)


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
