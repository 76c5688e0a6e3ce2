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
from es_export.sink import S3Client
from es_export.tracking import Connection


@dataclass(frozen=True)
class MySQLSettings:
    """Where the tracking database is. `from_env` reads MYSQL_HOST, MYSQL_PORT, MYSQL_USER,
    MYSQL_PASSWORD and MYSQL_DB, and for TLS MYSQL_SSL_CA and MYSQL_SSL_VERIFY_IDENTITY.

    With `ssl_ca` (a PEM bundle, e.g. Amazon RDS's global-bundle.pem) the connection is TLS and the
    server's certificate must chain to it; `ssl_verify_identity` (default on) also checks that it
    names the host. A relative `ssl_ca` is found beside the code (the Lambda package's root).
    """

    host: str
    user: str
    password: str
    database: str
    port: int = 3306
    connect_timeout: int = 10
    ssl_ca: str | None = None
    ssl_verify_identity: bool = True

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
                   database=database or env["MYSQL_DB"], ssl_ca=_ssl_ca(env),
                   ssl_verify_identity=_verify_identity(env.get("MYSQL_SSL_VERIFY_IDENTITY", "true")))


def _ssl_ca(env: Mapping[str, str]) -> str | None:
    path = env.get("MYSQL_SSL_CA") or None
    if path is None:
        return None
    if not os.path.isabs(path):  # in Lambda the package is unpacked in LAMBDA_TASK_ROOT
        path = os.path.join(env.get("LAMBDA_TASK_ROOT") or os.getcwd(), path)
    if not os.path.isfile(path):
        raise ConfigError(f"MYSQL_SSL_CA names {path!r}, which is not a file: give the path of the PEM bundle "
                          "that signs the tracking database's certificate (for RDS, global-bundle.pem)")
    return path


def _verify_identity(value: str) -> bool:
    flag = value.strip().lower()
    if flag not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"MYSQL_SSL_VERIFY_IDENTITY must be true or false, got {value!r}")
    return flag in ("true", "1", "yes")


def mysql(settings: MySQLSettings, *, driver: str = "pymysql") -> Connection:
    """A DB-API connection: PyMySQL (pure Python, as in Lambda) or mysqlclient (`MySQLdb`, as in Airflow)."""
    kwargs: dict[str, Any] = {"host": settings.host, "port": settings.port, "user": settings.user,
                              "password": settings.password, "database": settings.database, "charset": "utf8mb4",
                              "connect_timeout": settings.connect_timeout}
    if driver == "pymysql":
        import pymysql

        if settings.ssl_ca:
            kwargs.update(ssl_ca=settings.ssl_ca, ssl_verify_cert=True,
                          ssl_verify_identity=settings.ssl_verify_identity)
        return pymysql.connect(**kwargs)
    if driver == "mysqldb":
        import MySQLdb

        if settings.ssl_ca:
            kwargs.update(ssl={"ca": settings.ssl_ca},
                          ssl_mode="VERIFY_IDENTITY" if settings.ssl_verify_identity else "VERIFY_CA")
        return MySQLdb.connect(**kwargs)
    raise ConfigError(f"unknown MySQL driver {driver!r}; use 'pymysql' or 'mysqldb'")


def s3_config(upload_concurrency: int) -> Any:
    """botocore settings of every S3 client: standard retries with backoff (throttling, 5xx), and
    enough pooled connections for the uploads a batch runs at once."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=max(10, upload_concurrency))


def s3(upload_concurrency: int, *, expected_bucket_owner: str | None = None, **kwargs: Any) -> S3Client:
    import boto3

    return pin_bucket_owner(boto3.client("s3", config=s3_config(upload_concurrency), **kwargs), expected_bucket_owner)


# Every S3 call the package makes; each takes ExpectedBucketOwner.
OWNED_OPERATIONS = ("PutObject", "GetObject", "HeadObject", "DeleteObject", "DeleteObjects", "ListObjectsV2")


def pin_bucket_owner(client: Any, owner: str | None) -> Any:
    """`client`, sending ExpectedBucketOwner=`owner` with every object call: should the bucket be deleted and
    its name taken by another account, S3 refuses the call (403) instead of writing the archive there."""
    if owner:
        def add_owner(params: dict[str, Any], **_: Any) -> None:
            params.setdefault("ExpectedBucketOwner", owner)

        for operation in OWNED_OPERATIONS:
            client.meta.events.register(f"before-parameter-build.s3.{operation}", add_owner)
    return client
