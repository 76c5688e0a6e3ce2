"""What the listener takes from an Airflow DAG run (the listener itself runs in
tests/integration/test_airflow_ops.py, in a running Airflow)."""

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from es_export_airflow import run_mirror

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def dag_run(**over):
    values = {"dag_id": "es_message_export", "run_id": "manual__2026-01-02T03:04:00+00:00", "clear_number": 0,
              "start_date": T0, "end_date": None, "run_after": T0, "queued_at": T0,
              "data_interval_start": datetime(2026, 1, 1, tzinfo=UTC),
              "data_interval_end": datetime(2026, 1, 2, tzinfo=UTC)}
    return SimpleNamespace(**{**values, **over})


def test_a_cleared_run_counts_its_tries_and_links_to_itself(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    run = run_mirror.airflow_run(dag_run(clear_number=2, end_date=T0), "success")
    assert (run.state, run.try_number, run.end) == ("success", 3, T0)
    assert run.url == "http://airflow.example:8080/dags/es_message_export/runs/manual__2026-01-02T03%3A04%3A00%2B00%3A00"


def test_a_running_run_has_no_end_and_a_run_without_interval_gets_a_placeholder():
    run = run_mirror.airflow_run(dag_run(end_date=T0, data_interval_start=None, data_interval_end=None), "running")
    assert run.end is None
    assert run.interval_start == run.interval_end == T0


def test_other_dags_are_ignored_and_errors_never_escape(monkeypatch):
    calls = []

    def unreachable_database():
        calls.append(1)
        raise ConnectionError("MySQL is down")

    monkeypatch.setattr(run_mirror, "mysql_connection", unreachable_database)
    run_mirror.mirror(dag_run(dag_id="someone_else"), "failed")
    assert calls == []
    run_mirror.mirror(dag_run(), "failed")  # logged, not raised: the scheduler must go on
    assert calls == [1]
