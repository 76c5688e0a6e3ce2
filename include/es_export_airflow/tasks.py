"""What the DAGs' tasks share: turning non-retryable errors into failures, and the mapped batch's label."""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, cast

from airflow.providers.standard.decorators.sensor import DecoratedSensorOperator
from airflow.sdk import Param, get_current_context
from airflow.sdk.bases.decorator import task_decorator_factory
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from es_export.config import MAX_BATCH_SIZE, Dispatch
from es_export.errors import ExportError
from es_export_airflow.settings import DATE_OR_DATETIME

# The Airflow pool every batch (mapped `process` task) runs in, so that however many runs and
# backfills are live, at most its number of slots of batches query Elasticsearch at once.
# ES_EXPORT_BATCH_POOL names another pool; `make airflow` (devstack/airflow.sh) creates it with
# BATCH_POOL_SLOTS slots, the documented default size.
BATCH_POOL = "es_export_batches"
BATCH_POOL_SLOTS = 8


@contextmanager
def failing_fast() -> Generator[None, None, None]:
    """Errors retrying cannot fix (bad params, missing index) fail the task without retries."""
    try:
        yield
    except ExportError as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise


def batch_label(batch: dict[str, Any]) -> str:
    """What the grid shows for a mapped `process` task (its map_index_template)."""
    return f"{batch['batch_no']} (id {batch['batch_id']}, {batch['size']} msgs)"


def range_params(start_help: str, end_help: str) -> dict[str, Param]:
    """The `start` and `end` params of a trigger form (UTC dates or datetimes, both optional)."""
    return {"start": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME, description=start_help),
            "end": Param(None, type=["null", "string"], pattern=DATE_OR_DATETIME, description=end_help)}


def batch_params(dispatch_help: str) -> dict[str, Param]:
    """The `dispatch` and `batch_size` params both DAGs share."""
    return {
        "dispatch": Param("local", type="string", enum=[d.value for d in Dispatch], description=dispatch_help),
        "batch_size": Param(500, type="integer", minimum=1, maximum=MAX_BATCH_SIZE,
                            description="Messages per batch; raised automatically to stay within max_batches."),
    }


def batch_pool() -> str:
    """The pool of the `process` tasks: ES_EXPORT_BATCH_POOL, read when a DAG file is parsed, or BATCH_POOL.

    The pool must exist: Airflow 3.3.1 does not warn at parse time, and its scheduler leaves a task
    whose pool is missing `scheduled` for ever, logging "Tasks using non-existent pool ..." each loop.
    """
    return os.environ.get("ES_EXPORT_BATCH_POOL") or BATCH_POOL


# The context key under which a poke resumed from a deferral finds its trigger's event (a key of our own).
TRIGGER_EVENT = "es_export_trigger_event"


class BatchSensor(DecoratedSensorOperator):
    """`@task.sensor` whose poke may defer (`context["task"].defer(..., method_name="execute")`).

    Airflow resumes a deferred task by calling `method_name(context, event=<the trigger's payload>)`;
    the sensor's own `execute(context)` takes no event, so this one does, leaves it in the context
    for the poke, and pokes again.
    """

    def execute(self, context: Any, event: Any = None) -> Any:
        if event is not None:
            context[TRIGGER_EVENT] = event
        return super().execute(context)


def batch_sensor_task(**kwargs: Any) -> Any:
    """`@task.sensor` with BatchSensor as its operator."""
    return task_decorator_factory(multiple_outputs=False, decorated_operator_class=BatchSensor, **kwargs)


def batch_sensor() -> Any:
    """The mapped `process` task of both DAGs: a sensor in reschedule mode that exports its batch here,
    in the Lambda, or waits deferred (in the triggerer) for the Lambda behind SQS. Made per DAG file
    parse, so its poke interval (ES_EXPORT_POKE_SECONDS) and its pool (ES_EXPORT_BATCH_POOL) are read then."""
    from es_export_airflow import dispatch

    @batch_sensor_task(task_id="process", map_index_template="batch {{ batch_label }}", pool=batch_pool(),
                       **dispatch.sensor_settings())
    def process(batch: dict) -> PokeReturnValue:
        """Export one batch: here (local), in the Lambda (lambda), or wait for the Lambda behind SQS (sqs)."""
        context = get_current_context()
        # map_index_template renders from the context, so the label goes there (a key of our own).
        cast("dict[str, Any]", context)["batch_label"] = batch_label(batch)
        return dispatch.poke(batch, context)

    return process
