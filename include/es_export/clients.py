"""MySQL and S3 clients built from plain settings, the same way everywhere: the Lambda, the migrate
command, the demo, the benchmarks and the tests (Airflow builds its own from connections, see
es_export_airflow.connections, with the same S3 retry configuration). The search cluster's client
comes from es_export.search, which detects the engine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from es_export.errors import ConfigError


@dataclass(frozen=True)
class MySQLSettings:
    """Where the tracking database is. `from_env` reads MYSQL_HOST, MYSQL_PORT, MYSQL_USER,
    MYSQL_PASSWORD and MYSQL_DB."""

    host: str
    user: str
    password: str
    database: str
    port: int = 3306
    connect_timeout: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, database: str | None = None,
                 password: str | None = None) -> MySQLSettings:
        needed = ["MYSQL_HOST", "MYSQL_USER"] + ([] if password is not None else ["MYSQL_PASSWORD"])
        needed += [] if database else ["MYSQL_DB"]
        missing = [name for name in needed if not env.get(name)]
        if missing:
            raise ConfigError(f"set {', '.join(missing)} in the environment to reach the tracking database")
        return cls(host=env["MYSQL_HOST"], port=int(env.get("MYSQL_PORT") or 3306), user=env["MYSQL_USER"],
                   password=env["MYSQL_PASSWORD"] if password is None else password,
                   database=database or env["MYSQL_DB"])


def mysql(settings: MySQLSettings, *, driver: str = "pymysql") -> Any:
    """A DB-API connection: PyMySQL (pure Python, as in Lambda) or mysqlclient (`MySQLdb`, as in Airflow)."""
    kwargs = {"host": settings.host, "port": settings.port, "user": settings.user, "password": settings.password,
              "database": settings.database, "charset": "utf8mb4", "connect_timeout": settings.connect_timeout}
    if driver == "pymysql":
        import pymysql

        return pymysql.connect(**kwargs)
    if driver == "mysqldb":
        import MySQLdb

        return MySQLdb.connect(**kwargs)
    raise ConfigError(f"unknown MySQL driver {driver!r}; use 'pymysql' or 'mysqldb'")


def s3_config(upload_concurrency: int) -> Any:
    """botocore settings of every S3 client: standard retries with backoff (throttling, 5xx), and
    enough pooled connections for the uploads a batch runs at once."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=max(10, upload_concurrency))


def s3(upload_concurrency: int, **kwargs: Any) -> Any:
    import boto3

    return boto3.client("s3", config=s3_config(upload_concurrency), **kwargs)
