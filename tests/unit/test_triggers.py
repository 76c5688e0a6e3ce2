"""The sqs wait's trigger: what the triggerer rebuilds from the database, and when a batch counts as settled."""

import pytest

from es_export.model import BatchProgress, Status
from es_export_airflow import batch_sensor
from es_export_airflow.triggers import BatchesSettledTrigger

pytestmark = pytest.mark.unit

KWARGS = {"job_id": 7, "batch_id": 31, "batch_no": 4, "poll_seconds": 30.0, "sqs_max_receive": 3}


def test_serialize_round_trips_through_its_classpath():
    from airflow.sdk._shared.module_loading import import_string  # as the triggerer and dag.test load it

    classpath, kwargs = BatchesSettledTrigger(**KWARGS).serialize()
    assert (classpath, kwargs) == ("es_export_airflow.triggers.BatchesSettledTrigger", KWARGS)
    again = import_string(classpath)(**kwargs)
    assert type(again) is BatchesSettledTrigger and again.serialize() == (classpath, kwargs)


def progress(status, receives=1, *, undispatched=False, lease_expired=False):
    return BatchProgress(31, Status(status), receives, undispatched, lease_expired)


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
    def __init__(self, try_number, max_tries):
        self.try_number, self.max_tries = try_number, max_tries


class FakeTask:
    retries = 2


# Airflow sets max_tries to retries (2) when a task instance is created, and to try_number + retries
# when a person clears it (clear_task_instances).
@pytest.mark.parametrize(("context", "cleared"), [
    pytest.param({"ti": FakeTI(1, 2)}, False, id="first-try"),
    pytest.param({"ti": FakeTI(2, 2)}, False, id="automatic-retry"),
    pytest.param({"ti": FakeTI(3, 2)}, False, id="second-automatic-retry"),
    pytest.param({"ti": FakeTI(2, 3)}, True, id="cleared-after-try-1"),
    pytest.param({"ti": FakeTI(3, 3)}, False, id="automatic-retry-after-a-clear"),
    pytest.param({"ti": FakeTI(4, 5)}, True, id="cleared-after-try-3"),
    pytest.param({"ti": FakeTI(2, 3), "task_reschedule_count": 3}, False, id="cleared-rescheduled"),
    pytest.param({"ti": FakeTI(2, 3), batch_sensor.TRIGGER_EVENT: {"settled": "completed"}}, False,
                 id="cleared-resumed"),
])
def test_only_the_first_poke_after_a_clear_counts_as_a_clear(context, cleared):
    # Otherwise an automatic retry, or a poke resumed from the trigger, reopens a finished batch.
    assert batch_sensor.first_poke_after_a_clear({**context, "task": FakeTask()}) is cleared


@pytest.mark.parametrize("dag_id", ["es_message_export", "es_message_retry"])
def test_the_process_task_can_resume_from_a_deferral(dag_id):
    """Airflow resumes a deferred task with execute(context, event=...): the plain @task.sensor refuses
    the event (TypeError), ResumableSensor takes it."""
    import inspect

    from support import parse_dag

    process = parse_dag(dag_id).get_task("process")  # mapped: one task per batch
    assert process.operator_class is batch_sensor.ResumableSensor and process.partial_kwargs["mode"] == "reschedule"
    assert "event" in inspect.signature(batch_sensor.ResumableSensor.execute).parameters
