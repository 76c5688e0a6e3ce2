"""Airflow connections -> ready clients for the core: Elasticsearch, MySQL (tracking), S3."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Connection

from es_export import clients
from es_export.config import ExportConfig

ES_CONN_ID = "elasticsearch_default"
MYSQL_CONN_ID = "mysql_tracking"
AWS_CONN_ID = "aws_default"


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

    return S3Hook(aws_conn_id=conn_id, config=clients.s3_config(cfg.upload_concurrency)).get_conn()
