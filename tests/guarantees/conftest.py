"""The guarantees tier: the core library (no Airflow) against the real MariaDB, the S3/SQS server and one
Elasticsearch node. One scenario per guarantee, the whole tier in a few minutes: `make test-guarantees`,
and what `make mutation` runs against each mutation of the guarantee code."""

import uuid

import pytest

import support
from es_export.config import ExportConfig
from scenarios import DB, SEED


def pytest_collection_modifyitems(items):
    for item in items:
        if "/guarantees/" in str(item.fspath):
            item.add_marker(pytest.mark.guarantees)


@pytest.fixture(scope="session")
def indices(es):
    with support.own_indices(es, SEED, "gt") as names:
        yield names


@pytest.fixture(scope="session")
def bucket(s3):
    name = f"guarantees-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


@pytest.fixture()
def cfg(indices, bucket):
    """The tier's indices, with a fresh prefix: every test starts with an empty export."""
    return ExportConfig(**indices, bucket=bucket, prefix=f"g-{uuid.uuid4().hex[:6]}", scan_page_size=25,
                        retry_base_seconds=1)
