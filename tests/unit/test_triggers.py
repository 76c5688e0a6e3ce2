"""The sqs wait's trigger: what the triggerer rebuilds from the database, and when a batch counts as settled."""

import pytest

from es_export.model import BatchProgress, Status
from es_export_airflow import dispatch, tasks
from es_export_airflow.triggers import BatchesSettledTrigger

pytestmark = pytest.mark.unit

KWARGS = {"job_id": 7, "batch_id": 31, "batch_no": 4, "poll_seconds": 30.0, "sqs_max_receive": 3}


def test_serialize_round_trips_through_its_classpath():
    from airflow.sdk._shared.module_loading import import_string  # as the triggerer and dag.test load it

    classpath, kwargs = BatchesSettledTrigger(**KWARGS).serialize()
    assert (classpath, kwargs) == ("es_export_airflow.triggers.BatchesSettledTrigger", KWARGS)
    again = import_string(classpath)(**kwargs)
    assert type(again) is BatchesSettledTrigger and again.serialize() == (classpath, kwargs)


def progress(status, attempts=1, *, undispatched=False, lease_expired=False):
    return BatchProgress(31, Status(status), attempts, undispatched, lease_expired)


@pytest.mark.parametrize(("row", "settled"), [
    pytest.param(progress("pending"), None, id="queued-waits"),
    pytest.param(progress("running"), None, id="running-waits"),
    pytest.param(progress("failed", 2), None, id="failed-below-the-limit-waits-for-redelivery"),
    pytest.param(progress("failed", 2, lease_expired=True), None, id="failed-has-no-lease-to-expire"),
    pytest.param(progress("completed"), "completed", id="completed"),
    pytest.param(progress("completed", undispatched=True), "completed", id="completed-even-if-unqueued"),
    pytest.param(progress("dead"), "dead", id="dead"),
    pytest.param(progress("failed", 3), "failed_out", id="failed-max-receive-times"),
    pytest.param(progress("pending", 0, undispatched=True), "undispatched", id="never-queued"),
    pytest.param(progress("pending", 0, lease_expired=True), "lease_expired", id="queued-past-its-lease"),
    pytest.param(progress("running", 1, lease_expired=True), "lease_expired", id="running-past-its-lease"),
])
def test_a_batch_settles_when_the_poke_has_something_to_do(row, settled):
    assert row.settled(max_receive=3) == settled


class FakeTI:
    def __init__(self, try_number):
        self.try_number = try_number


@pytest.mark.parametrize(("context", "first"), [
    pytest.param({"ti": FakeTI(1)}, False, id="first-try"),
    pytest.param({"ti": FakeTI(2)}, True, id="retry"),
    pytest.param({"ti": FakeTI(2), "task_reschedule_count": 3}, False, id="retry-rescheduled"),
    pytest.param({"ti": FakeTI(2), tasks.TRIGGER_EVENT: {"settled": "completed"}}, False, id="retry-resumed"),
])
def test_a_poke_resumed_from_the_trigger_is_not_a_new_try(context, first):
    # Otherwise a retried batch that completes would be reopened and exported again when it resumes.
    assert dispatch.first_poke_of_a_later_try(context) is first


@pytest.mark.parametrize("dag_id", ["es_message_export", "es_message_retry"])
def test_the_process_task_can_resume_from_a_deferral(dag_id):
    """Airflow resumes a deferred task with execute(context, event=...): the plain @task.sensor refuses
    the event (TypeError), BatchSensor takes it."""
    import inspect

    from support import parse_dag

    process = parse_dag(dag_id).get_task("process")  # mapped: one task per batch
    assert process.operator_class is tasks.BatchSensor and process.partial_kwargs["mode"] == "reschedule"
    assert "event" in inspect.signature(tasks.BatchSensor.execute).parameters
