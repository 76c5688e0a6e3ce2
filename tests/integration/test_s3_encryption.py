"""SSE-KMS (issue 14, item 9) on the local S3 server: with `sse_kms_key_id` every data object and the
manifest are stored with aws:kms and that key, in both layouts; without it no object carries an
SSE-KMS header (the bucket's default applies).

The key is a real one of the local KMS (moto, on the same endpoint as S3); the export is a seeded day
run through the core steps of es_message_export, as tests/integration/test_nothing_lost.py does.
"""

import os
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest

import seed_data
import support
from es_export import pipeline, sink
from es_export.config import ExportConfig, Layout, RunParams
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=40, days=1, start=date(2025, 4, 1), seed=97, large=0)
DB = "tracking_test_sse_kms"


@pytest.fixture(scope="module")
def kms_key():
    """A symmetric key of the local KMS: its ARN (what an operator puts in the Variable)."""
    kms = boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    key = kms.create_key(Description="es-export test key", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    yield key["Arn"]
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)


@pytest.fixture(scope="module")
def base(es, s3):
    with support.own_indices(es, SEED, "sse") as indices:
        cfg = ExportConfig(**indices, bucket=f"sse-kms-{uuid.uuid4().hex[:8]}")
        s3.create_bucket(Bucket=cfg.bucket)
        yield cfg


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


def export_day(es, conn, s3, cfg) -> list[str]:
    """One run of the seeded day (open_job, extract, plan, process_batch, reconcile): its keys on S3."""
    start = datetime(SEED.start.year, SEED.start.month, SEED.start.day, tzinfo=UTC)
    params = RunParams(start=start, end=start + timedelta(days=1), batch_size=15)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=f"sse-{uuid.uuid4().hex[:8]}", params=params)
    pipeline.extract(es, conn, cfg, job)
    for batch in pipeline.plan(conn, cfg, job, params):
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id)
    report = pipeline.reconcile(es, conn, s3, cfg, job)
    assert report.status == "completed" and report.documents == len(list(seed_data.ids_for_day(SEED, SEED.start)))
    keys = support.s3_keys(s3, cfg.bucket, cfg.prefix)
    assert sink.manifest_key(cfg.prefix, job.dag_id, job.run_id) in keys
    return keys


@pytest.mark.parametrize("layout", list(Layout), ids=lambda layout: layout.value)
def test_every_object_and_the_manifest_are_encrypted_with_the_key(es, conn, s3, base, kms_key, layout):
    cfg = replace(base, prefix=f"kms-{uuid.uuid4().hex[:6]}", layout=layout, sse_kms_key_id=kms_key)
    keys = export_day(es, conn, s3, cfg)
    data = [k for k in keys if k.endswith(sink.DATA_SUFFIXES) and f"/{sink.MANIFEST_FOLDER}/" not in k]
    assert data and len(keys) == len(data) + 1  # the day's objects and one manifest
    if layout.bundled:
        assert all(k.endswith(sink.NDJSON_SUFFIX if layout is Layout.NDJSON_GZIP else sink.PARQUET_SUFFIX)
                   for k in data)
    for key in keys:
        head = s3.head_object(Bucket=cfg.bucket, Key=key)
        assert (key, head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == (key, "aws:kms", kms_key)
    # Readable as before (S3 decrypts for a caller allowed kms:Decrypt on the key).
    assert sink.document_ids(s3, cfg.bucket, data[0])


@pytest.mark.parametrize("layout", [Layout.PER_MESSAGE, Layout.NDJSON_GZIP], ids=lambda layout: layout.value)
def test_without_a_key_no_object_carries_sse_kms_headers(es, conn, s3, base, layout):
    cfg = replace(base, prefix=f"plain-{uuid.uuid4().hex[:6]}", layout=layout)
    assert cfg.sse_kms_key_id is None
    for key in export_day(es, conn, s3, cfg):
        head = s3.head_object(Bucket=cfg.bucket, Key=key)
        assert head.get("ServerSideEncryption") != "aws:kms" and "SSEKMSKeyId" not in head, key
