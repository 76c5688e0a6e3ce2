"""What the listener takes from an Airflow DAG run, and that it never hurts the scheduler: no DDL, and
a tracking database that hangs costs a state change seconds (the listener also runs in
tests/integration/test_airflow_ops.py, in a running Airflow)."""

import contextlib
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from es_export_airflow import run_mirror
from es_export_airflow.connections import QUICK_TIMEOUTS, mysql_connection

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

    def unreachable_database(**kwargs):
        calls.append(1)
        raise ConnectionError("MySQL is down")

    monkeypatch.setattr(run_mirror, "mysql_connection", unreachable_database)
    run_mirror.mirror(dag_run(dag_id="someone_else"), "failed")
    assert calls == []
    run_mirror.mirror(dag_run(), "failed")  # logged, not raised: the scheduler must go on
    assert calls == [1]


@pytest.mark.parametrize("kind", [pytest.param("silent", id="accepts-never-greets"),
                                  pytest.param("backlog_full", id="connect-hangs")])
def test_a_black_holed_database_delays_a_state_change_by_seconds_only(monkeypatch, caplog, kind):
    from support import black_holed_port, mysql_connection_at

    with black_holed_port(kind) as port:
        monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", mysql_connection_at(port))
        started = time.monotonic()
        run_mirror.on_dag_run_failed(dag_run(end_date=T0), "task_failure")  # what the scheduler calls
        elapsed = time.monotonic() - started
    print(f"listener call against a black-holed MySQL port ({kind}): {elapsed:.2f} s")
    assert elapsed < 10, f"the listener held the scheduler for {elapsed:.1f} s"
    assert elapsed >= QUICK_TIMEOUTS["connect_timeout"] - 0.5  # it did wait for the connect timeout, then gave up
    assert "could not record run" in caplog.text


def test_the_quick_connection_passes_its_timeouts_to_mysqlclient(monkeypatch):
    import MySQLdb

    from support import mysql_connection_at

    seen = {}
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", mysql_connection_at(1))
    monkeypatch.setattr(MySQLdb, "connect", lambda **kw: seen.update(kw) or SimpleNamespace(close=lambda: None))
    with mysql_connection(quick=True):
        pass
    assert {k: seen[k] for k in QUICK_TIMEOUTS} == QUICK_TIMEOUTS
    seen.clear()
    with mysql_connection():  # tasks keep the driver's defaults
        pass
    assert not set(QUICK_TIMEOUTS) & set(seen)


def test_the_listener_never_migrates(monkeypatch):
    from es_export import tracking

    def no_ddl(conn):
        raise AssertionError("the listener ran migrate() in the scheduler")

    written = []
    monkeypatch.setattr(tracking, "migrate", no_ddl)
    monkeypatch.setattr(tracking, "mirror_airflow_run", lambda conn, run: written.append(run.state))
    monkeypatch.setattr(run_mirror, "mysql_connection",
                        lambda **kw: contextlib.nullcontext(SimpleNamespace()))
    run_mirror.on_dag_run_success(dag_run(end_date=T0), "success")
    assert written == ["success"]
