"""Airflow connections -> ready clients for the core: Elasticsearch, MySQL (tracking), S3."""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Connection

from es_export import clients, search
from es_export.config import ExportConfig
from es_export.search import SearchClient, SearchSettings

ES_CONN_ID = "elasticsearch_default"
MYSQL_CONN_ID = "mysql_tracking"
AWS_CONN_ID = "aws_default"


def elasticsearch_client(conn_id: str | None = None) -> SearchClient:
    """A client of the source cluster (Elasticsearch 8/9 or OpenSearch 2/3, detected) from an Airflow connection.

    The connection (`elasticsearch_default`, or the one ES_EXPORT_SEARCH_CONN_ID names, e.g. an
    `opensearch` connection): host, port, schema `http`/`https`, login/password; extras
    `api_key`, `ca_certs`, `verify_certs`, `request_timeout`, and for Amazon OpenSearch Service
    `aws_region` (SigV4, service `es`; credentials of the `aws_default` connection, or of
    `aws_conn_id`).
    """
    conn = Connection.get(conn_id or os.environ.get("ES_EXPORT_SEARCH_CONN_ID") or ES_CONN_ID)
    extra = conn.extra_dejson
    scheme = conn.schema or extra.get("scheme") or ("https" if extra.get("aws_region") else "http")
    host = conn.host or "localhost"
    url = host if host.startswith(("http://", "https://")) else f"{scheme}://{host}:{conn.port or 9200}"
    settings = SearchSettings(
        url=url, username=conn.login or None, password=conn.password or None, api_key=extra.get("api_key"),
        ca_certs=extra.get("ca_certs"), verify_certs=_flag(extra.get("verify_certs", True)),
        aws_region=extra.get("aws_region"), aws_service=extra.get("aws_service", "es"),
        request_timeout=float(extra.get("request_timeout", 120)))
    credentials = None
    if settings.aws_region:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        credentials = AwsBaseHook(aws_conn_id=extra.get("aws_conn_id", AWS_CONN_ID)).get_session().get_credentials()
    return search.connect(settings, aws_credentials=credentials)


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off")


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
