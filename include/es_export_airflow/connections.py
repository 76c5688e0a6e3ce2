"""Airflow connections -> ready clients for the core: Elasticsearch, MySQL (tracking), S3."""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, cast

from airflow.sdk import Connection

from es_export import clients, search, tracking
from es_export.config import ExportConfig
from es_export.search import SearchClient, SearchSettings
from es_export.sink import S3Client

ES_CONN_ID = "elasticsearch_default"
MYSQL_CONN_ID = "mysql_tracking"
AWS_CONN_ID = "aws_default"


def elasticsearch_client(conn_id: str | None = None) -> SearchClient:
    """A client of the source cluster (Elasticsearch 8/9 or OpenSearch 2/3, detected) from an Airflow connection.

    The connection (`elasticsearch_default`, or the one ES_EXPORT_SEARCH_CONN_ID names, e.g. an
    `opensearch` connection): host, port, schema `http`/`https`, login/password; extras
    `api_key`, `ca_certs`, `verify_certs`, `request_timeout`, `allow_http_credentials` (a login over
    plain http is refused without it), and for Amazon OpenSearch Service
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
        request_timeout=float(extra.get("request_timeout", 120)),
        allow_http_credentials=_flag(extra.get("allow_http_credentials", False)))
    credentials = None
    if settings.aws_region:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        credentials = AwsBaseHook(aws_conn_id=extra.get("aws_conn_id", AWS_CONN_ID)).get_session().get_credentials()
    return search.connect(settings, aws_credentials=credentials)


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off")


# mysqlclient's timeouts (seconds) for the code that runs inside Airflow's own components: the job_runs
# listener (in the scheduler and the api-server), the failed-run alert (in the DAG processor) and the
# sqs waits' poll (in the triggerer). A tracking database that hangs must cost them seconds, not the
# kernel's minutes of SYN retries or a read that never returns. Tasks keep the driver's defaults: a
# long statement is normal there.
QUICK_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 5, "write_timeout": 5}


@contextmanager
def mysql_connection(conn_id: str = MYSQL_CONN_ID, *,
                     quick: bool = False) -> Generator[tracking.Connection, None, None]:
    """A mysqlclient connection of the tracking database from the Airflow connection (MySqlHook: its
    extras `charset`, `ssl`, `ssl_mode`, `iam` apply). `quick`: with QUICK_TIMEOUTS."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    hook = _quick_mysql_hook(conn_id) if quick else MySqlHook(mysql_conn_id=conn_id)
    # mysqlclient's connection (the hook's type also names mysql-connector's, which the package never uses)
    conn = cast("tracking.Connection", hook.get_conn())
    try:
        yield conn
    finally:
        conn.close()


def quick_mysql(connection: Connection) -> Any:
    """A mysqlclient connection with QUICK_TIMEOUTS from a connection already looked up, as the triggerer
    must (`await BaseHook.aget_connection(...)`: a lookup inside the hook would block its event loop).
    The same keyword arguments as every other connection of the tracking database (its extras apply)."""
    return _quick_mysql_hook(connection.conn_id, connection=connection).get_conn()


def _quick_mysql_hook(conn_id: str, connection: Connection | None = None) -> Any:
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    class QuickMySqlHook(MySqlHook):
        # MySqlHook takes no timeout from the connection's extra; this is where it builds the keyword
        # arguments of MySQLdb.connect (a unit test fails if a provider upgrade stops calling it).
        def _get_conn_config_mysql_client(self, conn: Any) -> dict:
            return {**super()._get_conn_config_mysql_client(conn), **QUICK_TIMEOUTS}

    return QuickMySqlHook(mysql_conn_id=conn_id, connection=connection)


def s3_client(cfg: ExportConfig, conn_id: str = AWS_CONN_ID) -> S3Client:
    """A boto3 S3 client whose retries (standard mode, backoff) cover throttling and 5xx."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = S3Hook(aws_conn_id=conn_id, config=clients.s3_config(cfg.upload_concurrency)).get_conn()
    return clients.pin_bucket_owner(client, cfg.expected_bucket_owner)
