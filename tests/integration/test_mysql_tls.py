"""The processing Lambda reaches a tracking database that requires TLS (RDS with require_secure_transport):
the local MariaDB serves TLS with a private CA, and its user STACK_MYSQL_TLS_USER is REQUIRE SSL."""

from __future__ import annotations

import json
import subprocess

import pytest

import support
from es_export import clients, tracking
from es_export.config import ExportConfig
from es_export.errors import ConfigError

pytestmark = pytest.mark.integration

DB = "tracking_test_tls"


def tls_env(**extra) -> dict[str, str]:
    """The Lambda's MySQL environment for the TLS-only user."""
    return {"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": support.require_env("MYSQL_PORT"),
            "MYSQL_USER": support.require_env("STACK_MYSQL_TLS_USER"),
            "MYSQL_PASSWORD": support.require_env("MYSQL_PASSWORD"), "MYSQL_DB": DB, **extra}


@pytest.fixture(scope="module")
def database():
    support.new_tracking_database(DB).close()
    return DB


def cipher(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return cur.fetchone()[1]


@pytest.mark.parametrize("driver", ["pymysql", "mysqldb"])
def test_the_ca_bundle_gives_a_verified_tls_connection(database, driver):
    settings = clients.MySQLSettings.from_env(tls_env(MYSQL_SSL_CA=support.require_env("STACK_MYSQL_TLS_CA")))
    assert settings.ssl_verify_identity
    conn = clients.mysql(settings, driver=driver)
    try:
        assert cipher(conn)
        assert tracking.schema_version(conn) == tracking.LATEST_VERSION
    finally:
        conn.close()


def test_without_tls_the_user_is_refused(database):
    with pytest.raises(Exception, match="Access denied"):
        clients.mysql(clients.MySQLSettings.from_env(tls_env()))


def test_a_certificate_from_another_ca_is_refused(database, tmp_path):
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "k"), "-out", str(other)], check=True, capture_output=True)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        clients.mysql(clients.MySQLSettings.from_env(tls_env(MYSQL_SSL_CA=str(other))))


def test_a_ca_path_that_is_no_file_is_named(database):
    with pytest.raises(ConfigError, match="MYSQL_SSL_CA names .*no-such.pem"):
        clients.MySQLSettings.from_env(tls_env(MYSQL_SSL_CA="/nowhere/no-such.pem"))
    with pytest.raises(ConfigError, match="MYSQL_SSL_VERIFY_IDENTITY must be true or false"):
        clients.MySQLSettings.from_env(tls_env(MYSQL_SSL_VERIFY_IDENTITY="maybe"))


def test_a_relative_ca_is_found_in_the_lambda_package(database, tmp_path):
    (tmp_path / "rds-ca-bundle.pem").write_bytes(open(support.require_env("STACK_MYSQL_TLS_CA"), "rb").read())
    settings = clients.MySQLSettings.from_env(tls_env(MYSQL_SSL_CA="rds-ca-bundle.pem",
                                                      LAMBDA_TASK_ROOT=str(tmp_path)))
    assert settings.ssl_ca == str(tmp_path / "rds-ca-bundle.pem")


def test_the_lambda_exports_a_batch_over_tls(es, s3, database, monkeypatch):
    """The real handler, configured as deploy/template.yaml configures it, against the TLS-only user."""
    import uuid
    from datetime import UTC, date, datetime, timedelta

    from es_export.config import RunParams
    from es_export_lambda import handler
    from seed_data import SeedConfig

    seed = SeedConfig(messages=12, days=1, start=date(2025, 7, 1), seed=3, large=0)
    with support.own_indices(es, seed, "tls") as indices:
        cfg = ExportConfig(**indices, bucket=f"tls-{uuid.uuid4().hex[:8]}")
        s3.create_bucket(Bucket=cfg.bucket)
        start = datetime(2025, 7, 1, tzinfo=UTC)
        conn = support.connect(DB)
        _, batch = support.one_batch(es, conn, cfg, RunParams(start=start, end=start + timedelta(days=1)),
                                     run_id="tls")
        for key, value in tls_env(MYSQL_SSL_CA=support.require_env("STACK_MYSQL_TLS_CA")).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("EXPORT_CONFIG", json.dumps({**indices, "bucket": cfg.bucket}))
        handler._secret.cache_clear()
        result = handler.process({"batch": {**batch.as_dict(), "run_id": "tls"}})
        assert result["completed"] == batch.size == 12
        assert tracking.status_counts(conn, start, start + timedelta(days=1)) == {"completed": 12}
        conn.close()


def airflow_connection(monkeypatch, extra: dict) -> None:
    """The `mysql_tracking` connection as docs/configuration.md shows it for RDS, for the TLS-only user."""
    conn = json.loads(support.mysql_connection(DB))
    conn.update(login=support.require_env("STACK_MYSQL_TLS_USER"), extra=extra)
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", json.dumps(conn))


@pytest.mark.parametrize("quick", [False, True], ids=["tasks", "scheduler-and-api-server"])
def test_airflow_reaches_the_database_over_verified_tls(database, monkeypatch, quick):
    from es_export_airflow.connections import mysql_connection

    airflow_connection(monkeypatch, {"ssl": {"ca": support.require_env("STACK_MYSQL_TLS_CA")},
                                     "ssl_mode": "VERIFY_IDENTITY"})
    with mysql_connection(quick=quick) as conn:
        assert cipher(conn)
        assert tracking.schema_version(conn) == tracking.LATEST_VERSION


def test_airflow_refuses_a_server_its_ca_did_not_sign(database, monkeypatch, tmp_path):
    from es_export_airflow.connections import mysql_connection

    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "k"), "-out", str(other)], check=True, capture_output=True)
    airflow_connection(monkeypatch, {"ssl": {"ca": str(other)}, "ssl_mode": "VERIFY_IDENTITY"})
    with pytest.raises(Exception, match="certificate verify failed|CERTIFICATE_VERIFY_FAILED|SSL"), \
            mysql_connection():
        pass
    airflow_connection(monkeypatch, {})
    with pytest.raises(Exception, match="Access denied"), mysql_connection():
        pass
