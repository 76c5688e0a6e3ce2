"""Entry point of the processing Lambda: `es_export_lambda.handler.handler`.

It runs exactly the core's `pipeline.process_batch`, for one batch per direct invoke
(`dispatch=lambda`) or one batch per SQS record (`dispatch=sqs`, reporting partial batch item
failures so only the failed records return to the queue). No Airflow here; PyMySQL as the driver.

Settings come from the environment, and only from there:
  ES_URL (and ES_USERNAME / ES_PASSWORD), MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_DB, and the
  password either in MYSQL_PASSWORD or, better, in AWS Secrets Manager: MYSQL_SECRET_ARN (a secret
  whose value is the password, or JSON with a "password" key). EXPORT_CONFIG: a JSON object of
  ExportConfig fields (indices, bucket, prefix, ...). S3 uses the runtime's credentials. LOG_LEVEL.

The payload and its checks are es_export.payload's. Logging is set up inside the handler, so
importing this module changes nothing for its importer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from es_export import clients, pipeline, search
from es_export.config import Dispatch, ExportConfig
from es_export.errors import ConfigError, StaleAttempt
from es_export.payload import check_expected, parse
from es_export.sink import S3Client
from es_export.tracking import Connection

log = logging.getLogger(__name__)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Direct invoke: {"batch": {...descriptor...}, "expect": {...}} -> the batch's result.

    SQS event: {"Records": [...]} whose bodies are such payloads -> {"batchItemFailures": [...]}.
    """
    # Here, not at import: importing the module (a test, a script, Airflow) must not change the root logger.
    logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    if "Records" in event:
        return _handle_sqs(event["Records"], context)
    return process(event, lease_seconds=_lease_seconds(context))


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
    batch, run_id, expect = parse(payload)
    cfg = ExportConfig.from_mapping(_env_config())
    cfg.check_dispatch(Dispatch.LAMBDA)  # a layout the function cannot write (parquet) fails no message
    database = _required("MYSQL_DB")
    check_expected(cfg, database, expect)
    conn = _mysql(database)
    try:
        result = pipeline.process_batch(_elasticsearch(), conn, _s3(cfg.upload_concurrency, cfg.expected_bucket_owner),
                                        cfg, batch,
                                        run_id=run_id, lease_seconds=lease_seconds or cfg.lambda_timeout_seconds + 60)
    finally:
        conn.close()
    return result.as_dict()


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
        raise ConfigError(f"environment variable {name} is not set; the Lambda needs it (see es_export_lambda.handler)")
    return value


@lru_cache(maxsize=4)
def _secret(arn: str) -> dict[str, str]:
    """A Secrets Manager secret (fetched once per container): JSON keys, or a plain string as "password"."""
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    try:
        value = json.loads(secret)
    except json.JSONDecodeError:
        return {"password": secret}
    if not isinstance(value, dict):
        raise ConfigError(f"secret {arn} must hold a string or a JSON object")
    return {k: str(v) for k, v in value.items()}


def _mysql_password() -> str:
    """From Secrets Manager when MYSQL_SECRET_ARN is set (MYSQL_PASSWORD is then ignored), else MYSQL_PASSWORD."""
    arn = os.environ.get("MYSQL_SECRET_ARN")
    if not arn:
        return _required("MYSQL_PASSWORD")
    secret = _secret(arn)
    if "password" not in secret:
        raise ConfigError(f"secret {arn} holds JSON without a 'password' key")
    return secret["password"]


def _search_credentials() -> dict[str, str | None]:
    """ES_SECRET_ARN's secret (JSON with username and password, or api_key) when set, else ES_USERNAME,
    ES_PASSWORD or ES_API_KEY: a secret keeps them out of the function's configuration, which anyone
    allowed lambda:GetFunctionConfiguration reads."""
    arn = os.environ.get("ES_SECRET_ARN")
    if arn:
        secret = _secret(arn)
        if not (secret.get("api_key") or secret.get("password")):
            raise ConfigError(f"secret {arn} must hold JSON with username and password, or with api_key")
        return {"username": secret.get("username"), "password": secret.get("password"),
                "api_key": secret.get("api_key")}
    return {"username": os.environ.get("ES_USERNAME") or None, "password": os.environ.get("ES_PASSWORD") or None,
            "api_key": os.environ.get("ES_API_KEY") or None}


def _mysql(database: str) -> Connection:
    return clients.mysql(clients.MySQLSettings.from_env(database=database, password=_mysql_password()))


@lru_cache(maxsize=1)
def _elasticsearch() -> search.SearchClient:
    """Cached per container: warm invocations reuse the connection pool (and the engine detected once).

    ES_URL, and ES_SECRET_ARN (or ES_USERNAME/ES_PASSWORD or ES_API_KEY), or ES_AWS_REGION for Amazon
    OpenSearch Service (SigV4 with the function's execution role); ES_CA_CERTS for a private CA;
    ES_ALLOW_HTTP_CREDENTIALS=true to send a login over plain http:// on a network you trust.
    """
    login = _search_credentials()
    return search.connect(search.SearchSettings(
        url=_required("ES_URL"), username=login["username"], password=login["password"], api_key=login["api_key"],
        ca_certs=os.environ.get("ES_CA_CERTS") or None,
        aws_region=os.environ.get("ES_AWS_REGION") or None,
        allow_http_credentials=os.environ.get("ES_ALLOW_HTTP_CREDENTIALS", "").strip().lower() == "true"))


@lru_cache(maxsize=4)
def _s3(concurrency: int, owner: str | None) -> S3Client:
    return clients.s3(concurrency, expected_bucket_owner=owner)


def describe() -> dict[str, Any]:
    """The configuration this container would use (no secrets): for a smoke test."""
    return asdict(ExportConfig.from_mapping(_env_config()))
