"""The job_runs listener against the real tracking database: it writes no DDL, and a statement that
hangs (a row lock) costs the scheduler seconds, not the 50 s of InnoDB's lock wait."""

import time
from datetime import UTC, datetime

import pytest

from es_export_airflow import run_mirror
from es_export_airflow.connections import QUICK_TIMEOUTS
from support import connect, new_tracking_database, point_airflow_at, query, reset_database

pytestmark = pytest.mark.integration

DB = "tracking_test_run_mirror"
T0 = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def dag_run(run_id: str, **over):
    from types import SimpleNamespace

    values = {"dag_id": "es_message_export", "run_id": run_id, "clear_number": 0, "start_date": T0,
              "end_date": T0, "run_after": T0, "queued_at": T0, "data_interval_start": datetime(2026, 1, 1, tzinfo=UTC),
              "data_interval_end": datetime(2026, 1, 2, tzinfo=UTC)}
    return SimpleNamespace(**{**values, **over})


@pytest.fixture()
def database(monkeypatch):
    point_airflow_at(monkeypatch, {}, DB)
    return DB


def test_on_an_empty_database_it_logs_and_creates_nothing(database, caplog):
    reset_database(database)
    run_mirror.on_dag_run_running(dag_run("manual__empty"), "")
    assert query(database, "SHOW TABLES") == ()
    assert "job_runs is not migrated yet" in caplog.text


def test_on_a_migrated_database_it_records_the_run(database):
    new_tracking_database(database).close()
    run_mirror.on_dag_run_failed(dag_run("manual__recorded"), "task_failure")
    assert query(database, "SELECT airflow_state, status, last_error FROM job_runs WHERE run_id = %s",
                 "manual__recorded") == (("failed", "failed", "Airflow run failed: task_failure"),)


def test_a_row_locked_by_another_transaction_costs_seconds(database, caplog):
    new_tracking_database(database).close()
    run_mirror.on_dag_run_running(dag_run("manual__locked", end_date=None), "")
    holder = connect(database)
    try:
        with holder.cursor() as cur:  # a long transaction holds the run's row
            cur.execute("SELECT id FROM job_runs WHERE run_id = %s FOR UPDATE", ("manual__locked",))
        started = time.monotonic()
        run_mirror.on_dag_run_success(dag_run("manual__locked"), "success")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    print(f"listener call blocked by a row lock: {elapsed:.2f} s")
    assert QUICK_TIMEOUTS["read_timeout"] - 0.5 <= elapsed < 10, f"the listener held the scheduler {elapsed:.1f} s"
    assert "could not record run manual__locked" in caplog.text
