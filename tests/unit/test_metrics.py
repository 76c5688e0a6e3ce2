"""One batch's record: the same fields whatever the dispatch mode reported."""

import pytest

from es_export_airflow import metrics

pytestmark = pytest.mark.unit

BATCH = {"job_id": 1, "batch_id": 10, "batch_no": 0, "size": 100, "run_id": "r", "dispatch": "sqs"}


def test_local_and_lambda_results_map_directly():
    result = {"attempted": 100, "completed": 98, "failed": 2, "bytes_written": 5000, "seconds": 1.23456}
    record = metrics.batch_record(BATCH, result, dag_id="es_message_export")
    assert (record["attempted"], record["completed"], record["failed"], record["bytes_written"],
            record["seconds"]) == (100, 98, 2, 5000, 1.235)
    assert record["event"] == "es_export.batch" and record["dispatch"] == "sqs"


def test_missing_counts_are_zero_not_an_error():
    record = metrics.batch_record(BATCH, {"completed": 100}, dag_id="d")
    assert (record["attempted"], record["completed"], record["failed"], record["bytes_written"]) == (0, 100, 0, 0)
