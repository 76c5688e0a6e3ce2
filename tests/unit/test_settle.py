"""The export's first task waits until the range to export ended settle_minutes ago: a scheduled run of the
day that just ended waits (deferred, in the triggerer), a run of a range that ended long ago does not."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from es_export_airflow import planning
from support import parse_dag

pytestmark = pytest.mark.unit


@pytest.fixture()
def settle_task(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG", json.dumps({"settle_minutes": 45}))
    return parse_dag("es_message_export").get_task("settle")


def context(task, params, interval_end):
    return {"task": task, "params": params, "data_interval_start": interval_end - timedelta(days=1),
            "data_interval_end": interval_end}


def test_the_scheduled_run_of_the_day_that_just_ended_waits_for_the_window(settle_task):
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if datetime.now(UTC) >= midnight + timedelta(minutes=45):
        midnight += timedelta(days=1)  # as if the scheduler started the run at the end of today
    with pytest.raises(TaskDeferred) as deferred:
        planning.settle(context(settle_task, {}, midnight))
    assert deferred.value.trigger.moment == midnight + timedelta(minutes=45)
    assert deferred.value.method_name == "execute"


def test_a_run_of_a_range_that_ended_long_ago_does_not_wait(settle_task):
    old = datetime(2024, 10, 2, tzinfo=UTC)
    assert planning.settle(context(settle_task, {}, old)).is_done
    manual = {"start": "2024-10-01", "end": "2024-10-02"}  # a manual run today: its params' range counts
    assert planning.settle(context(settle_task, manual, datetime.now(UTC))).is_done


def test_bad_params_are_refused_before_any_wait(settle_task):
    with pytest.raises(AirflowFailException, match="must be after start"):
        planning.settle(context(settle_task, {"start": "2024-10-05", "end": "2024-10-01"}, datetime.now(UTC)))


def test_the_settle_task_comes_first(settle_task):
    dag = parse_dag("es_message_export")
    assert dag.get_task("start_job").upstream_task_ids == {"settle"}
    assert settle_task.upstream_task_ids == set()


def test_airflows_own_datetimes_are_compared_rightly(settle_task):
    """A task's context holds pendulum datetimes; their sum with a timedelta must stay aware."""
    import pendulum

    old = pendulum.datetime(2024, 10, 2, tz="UTC")
    assert planning.settle(context(settle_task, {}, old)).is_done
    with pytest.raises(TaskDeferred):
        planning.settle(context(settle_task, {}, pendulum.now("UTC").add(days=1)))
