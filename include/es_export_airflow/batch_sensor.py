"""The mapped `process` task of both DAGs: a sensor that runs one batch in this worker, invokes the
processing Lambda with it, or waits for the Lambda behind SQS.

Whatever the mode, the batch runs the same `pipeline.process_batch` and records its outcome in
MySQL; the sensor reports the batch_progress counts. In sqs mode it waits deferred: a
`BatchesSettledTrigger` in the triggerer, whose poll all of a job's waiting batches share, wakes it
when its batch settled.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast

from airflow.providers.standard.decorators.sensor import DecoratedSensorOperator
from airflow.sdk import get_current_context
from airflow.sdk.bases.decorator import task_decorator_factory
from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from es_export import pipeline, tracking
from es_export.config import Dispatch, ExportConfig
from es_export.errors import TransientError
from es_export.model import Batch, Status
from es_export_airflow import metrics
from es_export_airflow.connections import elasticsearch_client, mysql_connection, s3_client
from es_export_airflow.dispatch import invoke_lambda, send_to_sqs
from es_export_airflow.failures import failing_fast
from es_export_airflow.settings import BATCH_TIMEOUT, batch_pool, load_config, sensor_settings
from es_export_airflow.triggers import BatchesSettledTrigger

log = logging.getLogger(__name__)

# The context key under which a poke resumed from a deferral finds its trigger's event (a key of our own).
TRIGGER_EVENT = "es_export_trigger_event"


def process_task() -> Any:
    """The mapped `process` task of both DAGs: a sensor in reschedule mode that exports its batch here,
    in the Lambda, or waits deferred (in the triggerer) for the Lambda behind SQS. Made per DAG file
    parse, so its poke interval (ES_EXPORT_POKE_SECONDS) and its pool (ES_EXPORT_BATCH_POOL) are read then."""
    @resumable_sensor_task(task_id="process", map_index_template="batch {{ batch_label }}", pool=batch_pool(),
                       **sensor_settings())
    def process(batch: dict) -> PokeReturnValue:
        """Export one batch: here (local), in the Lambda (lambda), or wait for the Lambda behind SQS (sqs)."""
        context = get_current_context()
        # map_index_template renders from the context, so the label goes there (a key of our own).
        cast("dict[str, Any]", context)["batch_label"] = batch_label(batch)
        return poke(batch, context)

    return process


def batch_label(batch: dict[str, Any]) -> str:
    """What the grid shows for a mapped `process` task (its map_index_template)."""
    return f"{batch['batch_no']} (id {batch['batch_id']}, {batch['size']} msgs)"


class ResumableSensor(DecoratedSensorOperator):
    """`@task.sensor` whose poke may defer (`context["task"].defer(..., method_name="execute")`).

    Airflow resumes a deferred task by calling `method_name(context, event=<the trigger's payload>)`;
    the sensor's own `execute(context)` takes no event, so this one does, leaves it in the context
    for the poke, and pokes again.
    """

    def execute(self, context: Any, event: Any = None) -> Any:
        if event is not None:
            context[TRIGGER_EVENT] = event
        return super().execute(context)


def resumable_sensor_task(**kwargs: Any) -> Any:
    """`@task.sensor` with ResumableSensor as its operator."""
    return task_decorator_factory(multiple_outputs=False, decorated_operator_class=ResumableSensor, **kwargs)


def poke(batch: dict[str, Any], context: Any) -> PokeReturnValue:
    """One poke of the mapped `process` sensor; a finished batch reports its metrics."""
    result = _poke(batch, context)
    if result.is_done:
        metrics.report_batch(batch, result.xcom_value or {}, dag_id=context["dag"].dag_id)
    return result


def _poke(batch: dict[str, Any], context: Any) -> PokeReturnValue:
    cfg = load_config()
    mode = Dispatch(batch.get("dispatch", Dispatch.LOCAL))
    with failing_fast():
        if first_poke_after_a_clear(context):
            _reopen_if_finished(batch)
        if mode is Dispatch.LOCAL:
            with mysql_connection() as conn:
                result = pipeline.process_batch(elasticsearch_client(), conn, s3_client(cfg), cfg,
                                                Batch.from_dict(batch), run_id=batch["run_id"])
            return PokeReturnValue(is_done=True, xcom_value=result.as_dict())
        if mode is Dispatch.LAMBDA:
            return PokeReturnValue(is_done=True, xcom_value=invoke_lambda(cfg, batch))
        return _wait_for_sqs(cfg, batch, context)


def first_poke_after_a_clear(context: Any) -> bool:
    """The first poke of the first try after a person cleared the task.

    Airflow raises max_tries to try_number + retries when a task is cleared, so the first try since
    the latest clear is max_tries - retries + 1 (Airflow's TaskInstance computes it the same way). An
    automatic retry comes after it, and a poke resumed from a deferral or a reschedule is no new try.
    """
    ti = context["ti"]
    first_since_clear = ti.max_tries - (context["task"].retries or 0) + 1
    return (ti.try_number > 1 and ti.try_number == first_since_clear and not context.get("task_reschedule_count")
            and TRIGGER_EVENT not in context)


def _reopen_if_finished(batch: dict[str, Any]) -> None:
    # Only on a clear: a person wants the finished batch exported again. An automatic retry of a task
    # that failed after its batch was recorded (a metric, a superseded-document removal) reports it.
    with mysql_connection() as conn:
        if tracking.batch_state(conn, batch["batch_id"])["status"] == Status.COMPLETED:
            reopened = tracking.reopen_batch(conn, batch["batch_id"])
            log.info("batch %s was cleared after it finished: exporting its %d message(s) again",
                     batch["batch_no"], reopened)


def _wait_for_sqs(cfg: ExportConfig, batch: dict[str, Any], context: Any) -> PokeReturnValue:
    if event := context.get(TRIGGER_EVENT):
        log.info("batch %s settled (%s, per the triggerer's poll): checking it", batch["batch_no"], event["settled"])
    with mysql_connection() as conn:
        stalled = tracking.expire_stalled_batch(conn, batch["batch_id"], policy=cfg.retry_policy())
        state = tracking.batch_state(conn, batch["batch_id"])
    if stalled:
        raise TransientError(f"batch {batch['batch_no']} {stalled}; its messages spent an attempt, and the "
                             "task's retry queues the batch again")
    if state["dispatched_at"] is None:  # the plan stopped before sending this one
        send_to_sqs(cfg, [batch])
        _defer_until_settled(cfg, batch, context)
    if state["status"] == Status.COMPLETED:
        seconds = (state["finished_at"] - state["started_at"]).total_seconds() if state["started_at"] else 0.0
        return PokeReturnValue(is_done=True, xcom_value={
            "job_id": state["job_id"], "batch_id": state["batch_id"], "batch_no": state["batch_no"],
            "attempted": state["total"], "completed": state["completed"], "failed": state["failed"],
            "bytes_written": state["bytes_written"], "seconds": seconds})
    if state["status"] == Status.FAILED and state["receives"] >= cfg.sqs_max_receive:
        raise TransientError(f"batch {batch['batch_no']} failed {state['attempts']} time(s) in the Lambda "
                             f"(its message is in the dead-letter queue): {state['last_error']}")
    _defer_until_settled(cfg, batch, context)


def _defer_until_settled(cfg: ExportConfig, batch: dict[str, Any], context: Any) -> NoReturn:
    """Give the worker back until the batch settles; the task then resumes in `execute` and pokes again.

    Waiting in the triggerer, not by rescheduling: a rescheduled poke is a worker interpreter (on
    MWAA a fresh one) and a MySQL connection every poke interval per batch; the triggerer polls all
    of a job's waiting batches with one statement per interval. The wait ends BATCH_TIMEOUT after
    the try started (a deferral keeps the try's start date), as the sensor's own timeout would.
    """
    task: BaseSensorOperator = context["task"]
    remaining = BATCH_TIMEOUT - (datetime.now(UTC) - context["ti"].start_date)
    if remaining <= timedelta(0):
        raise AirflowSensorTimeout(f"batch {batch['batch_no']} is still not done {BATCH_TIMEOUT} after its try "
                                   "started; see its batch_progress row and the Lambda's log")
    log.info("batch %s is not done yet: deferring; the triggerer checks it every %.0f s (at most %s more)",
             batch["batch_no"], task.poke_interval, str(remaining).split(".")[0])
    task.defer(trigger=BatchesSettledTrigger(job_id=batch["job_id"], batch_id=batch["batch_id"],
                                             batch_no=batch["batch_no"], poll_seconds=task.poke_interval,
                                             sqs_max_receive=cfg.sqs_max_receive),
               method_name="execute", timeout=remaining)
