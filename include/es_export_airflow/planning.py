"""The first steps of a run, one function per task: wait for the day to settle, open the job, extract the
ids, plan the batches and hand them out (in sqs mode the batches are queued then).

`start_*` returns the run's spec, which the later tasks receive through XCom: {"job": ..., "params": ...}.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue

from es_export import pipeline
from es_export.config import Dispatch, ExportConfig, RefreshParams, RetryParams, RunParams
from es_export.model import Batch, Job
from es_export_airflow.connections import elasticsearch_client, mysql_connection
from es_export_airflow.dispatch import send_to_sqs
from es_export_airflow.failures import failing_fast
from es_export_airflow.settings import load_config, run_params

Spec = dict[str, Any]

log = logging.getLogger(__name__)


def settle(context: MutableMapping[str, Any]) -> PokeReturnValue:
    """Done once the range to export ended `settle_minutes` ago (at once for a range that ended longer
    ago); until then the task waits deferred, in the triggerer. Bad params fail here, before any work."""
    with failing_fast():
        cfg = load_config()
        until = run_params(context, cfg).end + timedelta(minutes=cfg.settle_minutes)
    if datetime.now(UTC) >= until:
        return PokeReturnValue(is_done=True)
    log.info("the range ends at %s; waiting until %s (settle_minutes=%d) so its late writes are in the export",
             until - timedelta(minutes=cfg.settle_minutes), until.isoformat(), cfg.settle_minutes)
    task: BaseSensorOperator = context["task"]
    task.defer(trigger=DateTimeTrigger(moment=until), method_name="execute")


def start_export(context: MutableMapping[str, Any]) -> Spec:
    """Validate the params (the data interval where start or end is empty), migrate the tracking schema,
    open the job_runs row."""
    with failing_fast():
        cfg = load_config()
        params = run_params(context, cfg)
        with mysql_connection() as conn:
            job = pipeline.open_job(conn, dag_id=context["dag"].dag_id, run_id=context["run_id"], params=params,
                                    max_live_runs=cfg.max_live_runs)
    return {"job": job.as_dict(), "params": params.as_dict()}


def start_retry(context: MutableMapping[str, Any]) -> Spec:
    """Validate the retry params and open this run's job_runs row."""
    with failing_fast():
        cfg = load_config()
        params = RetryParams.resolve(dict(context["params"]), max_batch_size=cfg.max_batch_size)
        cfg.check_dispatch(params.dispatch)
        with mysql_connection() as conn:
            job = pipeline.open_retry_job(conn, dag_id=context["dag"].dag_id, run_id=context["run_id"],
                                          params=params)
    return {"job": job.as_dict(), "params": params.as_dict()}


def start_refresh(context: MutableMapping[str, Any]) -> Spec:
    """Validate the refresh params and open the run's job over its window of change times."""
    with failing_fast():
        cfg = load_config()
        params = RefreshParams.resolve(dict(context["params"]), max_batch_size=cfg.max_batch_size)
        cfg.check_dispatch(params.dispatch)
        with mysql_connection() as conn:
            job = pipeline.open_refresh_job(elasticsearch_client(), conn, cfg, dag_id=context["dag"].dag_id,
                                            run_id=context["run_id"], params=params)
    return {"job": job.as_dict(), "params": params.as_dict()}


def find_changes(spec: Spec) -> dict[str, Any]:
    """Take the exported messages whose source changed in the run's window, and the late ones."""
    with failing_fast(), mysql_connection() as conn:
        found = pipeline.find_changes(elasticsearch_client(), conn, load_config(), Job.from_dict(spec["job"]))
    return vars(found)


def plan_refresh(spec: Spec) -> list[dict[str, Any]]:
    """Cut what find_changes took into batches and hand them out."""
    with failing_fast(), mysql_connection() as conn:
        cfg, params, job = load_config(), RefreshParams.from_dict(spec["params"]), Job.from_dict(spec["job"])
        batches = pipeline.plan_taken(conn, cfg, job, batch_size=params.batch_size)
        return hand_out(cfg, batches, job=job, mode=params.dispatch)


def extract_slice_numbers(spec: Spec) -> list[int]:
    """The numbers of the extract's time slices (Airflow maps only over a whole task's return value)."""
    return list(range(RunParams.from_dict(spec["params"]).extract_slices))


def extract_slice(spec: Spec, slice_no: int, context: MutableMapping[str, Any]) -> dict[str, int]:
    """Stream the message ids of one time slice of the interval into message_tracking."""
    job = Job.from_dict(spec["job"])
    part = pipeline.slices_of(job, RunParams.from_dict(spec["params"]).extract_slices)[slice_no]
    context["extract_label"] = part.label()  # the task's map_index_template renders from the context
    with failing_fast(), mysql_connection() as conn:
        result = pipeline.extract(elasticsearch_client(), conn, load_config(), job, part)
    return {"slice": slice_no + 1, "ids_found": result.ids_found, "ids_new": result.ids_new}


def plan_export(spec: Spec) -> list[dict[str, Any]]:
    """Check that every extract slice finished, cut the messages to export into batches, hand them out."""
    with failing_fast(), mysql_connection() as conn:
        cfg, params, job = load_config(), RunParams.from_dict(spec["params"]), Job.from_dict(spec["job"])
        pipeline.finish_extract(conn, job, params.extract_slices)
        return hand_out(cfg, pipeline.plan(conn, cfg, job, params), job=job, mode=params.dispatch)


def plan_retry(spec: Spec) -> list[dict[str, Any]]:
    """Claim the failed messages that are due, cut them into batches, hand them out."""
    with failing_fast(), mysql_connection() as conn:
        cfg, params, job = load_config(), RetryParams.from_dict(spec["params"]), Job.from_dict(spec["job"])
        batches = pipeline.plan_retry(conn, cfg, job, batch_size=params.batch_size, only_job_id=params.job_id,
                                      revive_dead=params.revive_dead, start=params.start, end=params.end)
        return hand_out(cfg, batches, job=job, mode=params.dispatch)


def hand_out(cfg: ExportConfig, batches: list[Batch], *, job: Job, mode: str) -> list[dict[str, Any]]:
    """The descriptors the mapped `process` task expands over (only descriptors go through XCom); in sqs
    mode the batches are queued now."""
    descriptors = [{**b.as_dict(), "run_id": job.run_id, "dispatch": Dispatch(mode).value} for b in batches]
    if Dispatch(mode) is Dispatch.SQS:
        send_to_sqs(cfg, descriptors)
    return descriptors
