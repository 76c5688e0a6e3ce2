"""expected_bucket_owner: every S3 call the package makes (the Airflow tasks, the Lambda handler, manifests,
rewrites of NDJSON files, listings) names the account that must own the bucket, so a bucket deleted and
re-created by another account under the same name is never written (S3 then answers 403)."""

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import botocore.client
import pytest

import support
from es_export.config import ExportConfig, RunParams
from es_export.errors import ConfigError
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=30, days=1, start=date(2025, 5, 6), seed=19, large=0)
OWNER = "123456789012"


@pytest.fixture()
def s3_calls(monkeypatch):
    """Every S3 API call made in this process: (operation, its parameters as sent)."""
    calls: list[tuple[str, dict]] = []
    real = botocore.client.BaseClient._make_api_call

    def recording(self, operation_name, api_params):
        try:
            return real(self, operation_name, api_params)
        finally:  # the parameters after the client's own handlers added theirs
            if self.meta.service_model.service_name == "s3":
                calls.append((operation_name, dict(api_params)))

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return calls


def test_every_s3_call_of_an_export_and_of_the_lambda_names_the_bucket_owner(es, s3, airflow_db, s3_calls,
                                                                            monkeypatch):
    from es_export_lambda import handler

    database = f"tracking_test_owner_{uuid.uuid4().hex[:6]}"
    support.reset_database(database)
    bucket = f"owner-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    day = SEED.start
    with support.own_indices(es, SEED, "own") as indices:
        config = {**indices, "bucket": bucket, "layout": "ndjson_gzip", "expected_bucket_owner": OWNER,
                  "settle_minutes": 0}
        support.point_airflow_at(monkeypatch, config, database)
        for reprocess in (False, True):  # the second run rewrites the first run's files (Get, Put, Delete)
            run = support.run_dag("es_message_export", start=day.isoformat(),
                                  end=(day + timedelta(days=1)).isoformat(), reprocess=reprocess, batch_size=10)
            assert run.state == "success"
        # The Lambda handler's own client, on a re-export of the day's first batch.
        conn = support.connect(database)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        params = RunParams(start=start, end=start + timedelta(days=1), reprocess=True, batch_size=500)
        _, batch = support.one_batch(es, conn, ExportConfig.from_mapping(config), params, run_id="owner-lambda")
        conn.close()
        monkeypatch.setenv("EXPORT_CONFIG", json.dumps(config))
        monkeypatch.setenv("MYSQL_DB", database)
        handler._s3.cache_clear()
        lambda_calls = len(s3_calls)
        assert handler.process({"batch": {**batch.as_dict(), "run_id": "owner-lambda"}})["completed"] == batch.size
    to_bucket = [(op, p) for op, p in s3_calls if p.get("Bucket") == bucket and op != "CreateBucket"]  # the test's
    assert {"PutObject", "GetObject", "DeleteObject", "ListObjectsV2"} <= {op for op, _ in to_bucket}
    assert len(to_bucket) > lambda_calls > 0 and any(p.get("Bucket") == bucket for _, p in s3_calls[lambda_calls:])
    assert [(op, p.get("Key")) for op, p in to_bucket if p.get("ExpectedBucketOwner") != OWNER] == []


def test_an_owner_that_is_not_an_account_id_is_refused():
    with pytest.raises(ConfigError, match="expected_bucket_owner must be the 12-digit AWS account id"):
        ExportConfig(expected_bucket_owner="my-team")
