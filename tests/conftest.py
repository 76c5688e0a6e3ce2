"""Shared test setup: the settings of the local stack (`make up` writes .local/stack.env)."""

import os
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK_ENV = ROOT / ".local" / "stack.env"


def load_stack_env() -> dict[str, str]:
    values = {}
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, raw = line.partition("=")
                values[key] = shlex.split(raw)[0] if raw else ""
    return values


# Before anything imports Airflow: its home, no examples, the stack's connections.
for _key, _value in load_stack_env().items():
    os.environ.setdefault(_key, _value)
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".local" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# dag.test() cannot run a DAG with a deadline in Airflow 3.3.1 (see es_export_airflow.alerts); the
# deadline is tested in the running Airflow, which sets its own.
os.environ.setdefault("ES_EXPORT_DEADLINE_SECONDS", "off")


# Session-scoped clients of the real local stack, for the integration and guarantees tiers. A missing
# service is a failure, never a skip.
@pytest.fixture(scope="session")
def es():
    from elasticsearch import Elasticsearch

    from support import require_env

    client = Elasticsearch(require_env("ES_URL"), request_timeout=120)
    if not client.ping():
        pytest.fail(f"Elasticsearch at {os.environ['ES_URL']} does not answer; run `make up`")
    return client


@pytest.fixture(scope="session")
def mysql():
    from support import connect, require_env

    require_env("MYSQL_HOST")
    conn = connect()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def s3():
    import boto3

    from support import require_env

    return boto3.client("s3", endpoint_url=require_env("AWS_ENDPOINT_URL"), region_name="us-east-1")
