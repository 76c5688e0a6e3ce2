"""Session-scoped clients of the real local stack. A missing service is a failure, never a skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: start the local stack with `make up` (it writes .local/stack.env)")
    return value


@pytest.fixture(scope="session")
def es():
    from elasticsearch import Elasticsearch

    client = Elasticsearch(_require("ES_URL"), request_timeout=120)
    if not client.ping():
        pytest.fail(f"Elasticsearch at {os.environ['ES_URL']} does not answer; run `make up`")
    return client


def mysql_connect(database: str | None = None):
    import MySQLdb

    return MySQLdb.connect(host=_require("MYSQL_HOST"), port=int(_require("MYSQL_PORT")), user=_require("MYSQL_USER"),
                           password=_require("MYSQL_PASSWORD"), database=database or _require("MYSQL_DB"),
                           charset="utf8mb4")


@pytest.fixture(scope="session")
def mysql():
    conn = mysql_connect()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def s3():
    import boto3

    return boto3.client("s3", endpoint_url=_require("AWS_ENDPOINT_URL"), region_name="us-east-1")


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's own metadata database (SQLite under .local/airflow), migrated once per session."""
    out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True,
                         text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{out.stdout}\n{out.stderr}")
