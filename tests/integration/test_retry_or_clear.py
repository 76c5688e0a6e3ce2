"""A later try of the mapped `process` task reopens its finished batch only when a person cleared the task:
an automatic retry of a task that failed after its batch was recorded reports the batch as it is.

Airflow sets a task instance's max_tries to its retries, and to try_number + retries when a person
clears it; the context below is the one a task of `retries=2` gets on each try.
"""

from __future__ import annotations

import types
import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta

import pytest

import support
from es_export.config import ExportConfig, RunParams
from es_export_airflow import batch_sensor
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

DB = "tracking_test_retry_or_clear"
SEED = SeedConfig(messages=10, days=1, start=date(2025, 8, 1), seed=8, large=0)


def context(try_number: int, max_tries: int) -> dict:
    return {"ti": types.SimpleNamespace(try_number=try_number, max_tries=max_tries),
            "task": types.SimpleNamespace(retries=2), "dag": types.SimpleNamespace(dag_id="es_message_export")}


def test_an_automatic_retry_keeps_the_batch_and_a_clear_exports_it_again(es, s3, monkeypatch):
    with support.own_indices(es, SEED, "roc") as indices:
        cfg = ExportConfig(**indices, bucket=f"retry-or-clear-{uuid.uuid4().hex[:8]}")
        s3.create_bucket(Bucket=cfg.bucket)
        support.point_airflow_at(monkeypatch, {k: v for k, v in asdict(cfg).items() if v is not None
                                               and k in (*indices, "bucket")}, DB)
        conn = support.new_tracking_database(DB)
        start = datetime(2025, 8, 1, tzinfo=UTC)
        _, batch = support.one_batch(es, conn, cfg, RunParams(start=start, end=start + timedelta(days=1)),
                                     run_id="roc")
        descriptor = {**batch.as_dict(), "run_id": "roc", "dispatch": "local"}
        assert batch_sensor.poke(descriptor, context(1, 2)).xcom_value["completed"] == 10
        lost = support.query(DB, "SELECT message_id FROM message_tracking ORDER BY id LIMIT 1")[0][0]
        es.delete(index=cfg.messages_index, id=lost, refresh=True)  # the cluster lost a document since

        # The task failed after recording (a metric, an S3 error): Airflow's automatic retry.
        batch_sensor.poke(descriptor, context(2, 2))
        assert support.query(DB, "SELECT attempts, status FROM batch_progress") == ((1, "completed"),)
        assert support.query(DB, "SELECT COUNT(*) FROM message_tracking WHERE status = 'completed'") == ((10,),)

        # A person clears the task after that try: max_tries becomes 2 + 2, and try 3 exports it again.
        batch_sensor.poke(descriptor, context(3, 4))
        assert support.query(DB, "SELECT attempts FROM batch_progress") == ((2,),)
        assert support.query(DB, "SELECT status FROM message_tracking WHERE message_id = %s", lost) == (("failed",),)
        conn.close()
