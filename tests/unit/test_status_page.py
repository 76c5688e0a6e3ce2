"""The status page's HTML: every value escaped, progress and links shown (served for real in
tests/integration/test_airflow_ops.py)."""

from datetime import datetime

import pytest

from es_export_airflow import status_page

pytestmark = pytest.mark.unit

JOB = {"id": 7, "dag_id": "es_message_export", "run_id": "manual__<b>", "interval_start": datetime(2024, 10, 1),
       "interval_end": datetime(2024, 10, 2), "status": "completed", "airflow_state": "success", "airflow_try": 2,
       "airflow_url": "http://af/dags/es_message_export/runs/manual__%3Cb%3E", "dispatch": "local",
       "reprocess": 0, "ids_found": 300, "to_export": 300, "completed": 299, "failed": 1, "objects": 299,
       "last_error": None, "started_at": None, "finished_at": None, "batches": 3, "batches_done": 2,
       "batch_completed": 299, "batch_failed": 1, "batch_total": 300, "bytes_written": 1234}
PROBLEM = {"message_id": "<script>alert('x')</script>", "status": "failed", "attempts": 1, "job_id": 7,
           "batch_id": 4, "last_error": "message '<x>' is no longer in index 'messages'", "next_attempt_at": None,
           "updated_at": None}


def test_values_are_escaped_and_nothing_injects_markup():
    page = status_page.render({"jobs": [JOB], "problems": [PROBLEM]}, None)
    assert "<script>" not in page and "manual__<b>" not in page
    assert "&lt;script&gt;" in page and "manual__&lt;b&gt;" in page


def test_a_job_shows_its_batch_progress_and_links_to_its_run():
    page = status_page.render({"jobs": [JOB], "problems": []}, None)
    assert "<td>2/3</td>" in page
    assert 'href="http://af/dags/es_message_export/runs/manual__%3Cb%3E"' in page
    assert 'href="?job_id=7"' in page


def test_empty_tables_say_so():
    page = status_page.render({"jobs": [], "problems": []}, 3)
    assert "no jobs yet" in page and "job 3" in page


def test_one_job_shows_its_batches():
    batch = {"id": 4, "batch_no": 1, "status": "failed", "total": 150, "completed": 149, "failed": 1, "attempts": 2,
             "bytes_written": 99, "last_error": "ConnectionError: <es down>", "started_at": None, "finished_at": None}
    page = status_page.render({"jobs": [JOB], "batches": [batch], "problems": [PROBLEM]}, 7)
    assert "Batches of job 7" in page and '<td class="s-failed">failed</td>' in page
    assert "ConnectionError: &lt;es down&gt;" in page
