"""The seam between Airflow and the core package: connections -> clients, Variable/params -> config.

Only DAG files import this; the core package `es_export` never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Connection, Variable
from airflow.sdk.exceptions import AirflowFailException

from es_export.config import ExportConfig, RunParams
from es_export.errors import ExportError

CONFIG_VARIABLE = "es_message_export_config"
# What the trigger forms accept for start and end: a date, or a date and time with an optional zone.
DATE_OR_DATETIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"
ES_CONN_ID = "elasticsearch_default"
MYSQL_CONN_ID = "mysql_tracking"
AWS_CONN_ID = "aws_default"


def load_config() -> ExportConfig:
    """The Variable `es_message_export_config` (JSON, every key optional) as an ExportConfig."""
    values = Variable.get(CONFIG_VARIABLE, default={}, deserialize_json=True)
    return ExportConfig.from_mapping(values)


def run_params(context: dict[str, Any], cfg: ExportConfig) -> RunParams:
    return RunParams.resolve(dict(context["params"]), context.get("data_interval_start"),
                             context.get("data_interval_end"), max_range_days=cfg.max_range_days)


def elasticsearch_client(conn_id: str = ES_CONN_ID) -> Any:
    """An Elasticsearch client from an Airflow connection (host, port, schema http|https, login)."""
    from elasticsearch import Elasticsearch

    conn = Connection.get(conn_id)
    scheme = conn.schema or conn.extra_dejson.get("scheme") or "http"
    url = f"{scheme}://{conn.host}:{conn.port or 9200}"
    extra = conn.extra_dejson
    kwargs: dict[str, Any] = {"request_timeout": float(extra.get("request_timeout", 120)),
                              "retry_on_timeout": True, "max_retries": 3}
    if conn.login:
        kwargs["basic_auth"] = (conn.login, conn.password or "")
    if "verify_certs" in extra:
        kwargs["verify_certs"] = bool(extra["verify_certs"])
    return Elasticsearch(url, **kwargs)


@contextmanager
def mysql_connection(conn_id: str = MYSQL_CONN_ID) -> Generator[Any, None, None]:
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    conn = MySqlHook(mysql_conn_id=conn_id).get_conn()
    try:
        yield conn
    finally:
        conn.close()


def s3_client(cfg: ExportConfig, conn_id: str = AWS_CONN_ID) -> Any:
    """A boto3 S3 client whose retries (standard mode, backoff) cover throttling and 5xx."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5},
                    max_pool_connections=max(10, cfg.upload_concurrency))
    return S3Hook(aws_conn_id=conn_id, config=config).get_conn()


@contextmanager
def failing_fast() -> Generator[None, None, None]:
    """Errors retrying cannot fix (bad params, missing index) fail the task without retries."""
    try:
        yield
    except ExportError as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise


def alert_dead(cfg: ExportConfig, job_id: int, dead: list[dict[str, Any]], context: Any) -> None:
    """Tell a person that messages ran out of attempts: a log line always, SNS when a topic is set."""
    import logging

    if not dead:
        return
    sample = ", ".join(repr(d["message_id"]) for d in dead[:10])
    message = (f"{len(dead)} message(s) of job {job_id} are dead after {cfg.max_attempts} attempts "
               f"(e.g. {sample}); last error: {dead[0]['error']}. Revive them with es_message_retry "
               "and revive_dead=true once the cause is fixed.")
    logging.getLogger("es_export.alerts").error(message)
    if cfg.sns_topic_arn:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        SnsNotifier(aws_conn_id=AWS_CONN_ID, target_arn=cfg.sns_topic_arn, subject="es_message_export: dead messages",
                    message=message).notify(context)


def batch_label(batch: dict[str, Any]) -> str:
    """What the grid shows for a mapped `process` task (its map_index_template)."""
    return f"{batch['batch_no']} (id {batch['batch_id']}, {batch['size']} msgs)"
