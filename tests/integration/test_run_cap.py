"""max_live_runs holds for every kind of run (a backfill too): a run beyond it refuses to start, naming the
live runs, and changes nothing; its own retry and a run after one finished start."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import support
from es_export import pipeline, tracking
from es_export.config import RunParams
from es_export.errors import TooManyRuns

pytestmark = pytest.mark.integration

DAY = datetime(2025, 8, 1, tzinfo=UTC)


@pytest.fixture()
def conn(mysql):
    database = f"tracking_test_cap_{uuid.uuid4().hex[:6]}"
    connection = support.new_tracking_database(database)
    yield connection
    connection.close()


def open_run(conn, run_id: str, day: int):
    params = RunParams(start=DAY + timedelta(days=day), end=DAY + timedelta(days=day + 1))
    return pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id, params=params, max_live_runs=2)


def test_a_run_beyond_max_live_runs_refuses_to_start_and_changes_nothing(conn):
    first, second = open_run(conn, "backfill__1", 0), open_run(conn, "backfill__2", 1)
    with pytest.raises(TooManyRuns, match=r"2 run\(s\) of es_message_export are exporting already \(backfill__1, "
                                          r"backfill__2\), and max_live_runs=2"):
        open_run(conn, "backfill__3", 2)
    assert tracking.job_of_run(conn, "es_message_export", "backfill__3") is None
    assert open_run(conn, "backfill__1", 0).job_id == first.job_id  # a retry of a live run is no new run
    tracking.update_job(conn, second.job_id, status="completed")
    assert open_run(conn, "backfill__3", 2).job_id not in (first.job_id, second.job_id)
