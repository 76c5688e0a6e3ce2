"""MySQL tracking: every statement on job_runs, message_tracking, batch_progress, extract_checkpoints.

Works with any DB-API connection that uses the `%s` paramstyle (mysqlclient in Airflow, PyMySQL in
Lambda); `Connection` and `Cursor` say what is asked of it. Every statement is parameterised; table
and column names are constants of these modules. Times are stored as naive UTC DATETIME(6).

    schema       migrations
    jobs         job_runs rows, the Airflow-run mirror, which jobs are live
    claims       ids from the extract, claims of messages by jobs, the cut into batches
    batches      a batch's attempts: start, outcomes, finish, fail, stall, reopen (fenced); a job's
                 progress in one statement (the poll of the sqs waits)
    objects      which messages an S3 object holds, which files are still being uploaded (object_uploads);
                 a lock per object
    checkpoints  how far an extract got
    views        read-only counts and tables (reconcile, manifests, alerts, status page)
    retention    completed rows older than a number of days, deleted in small chunks
"""

from es_export.tracking._sql import Connection, Cursor, chunks, in_transaction, utc_naive
from es_export.tracking.batches import (
    batch_state,
    expire_stalled_batch,
    fail_batch,
    finish_batch,
    mark_dispatched,
    note_uploads,
    progress_of_job,
    record_outcomes,
    reopen_batch,
    start_batch,
)
from es_export.tracking.checkpoints import load_checkpoint, save_checkpoint, slice_checkpoints
from es_export.tracking.claims import (
    claim_failed,
    claim_for_job,
    effective_batch_size,
    insert_chunk,
    plan_batches,
)
from es_export.tracking.jobs import (
    LIVE_JOB_HOURS,
    completed_by_job,
    get_job,
    held_by_other_jobs,
    job_status_counts,
    live_runs,
    mirror_airflow_run,
    start_job,
    update_job,
)
from es_export.tracking.objects import (
    completed_elsewhere,
    completed_keys,
    forget_upload,
    object_lock,
    object_references,
    object_unlock,
    orphan_uploads,
    stalled_upload_batches,
    upload_state,
)
from es_export.tracking.refresh import (
    RefreshRow,
    advance_watermark,
    claim_changed,
    day_in_progress,
    erasable,
    forget_message,
    forget_rechecks,
    freshness,
    note_recheck,
    rechecks,
    record_refreshed_days,
    refresh_rows,
    tracked_per_day,
    watermark,
)
from es_export.tracking.retention import purge_completed
from es_export.tracking.schema import LATEST_VERSION, MIGRATIONS, migrate, schema_version
from es_export.tracking.views import (
    batch_counts,
    completed_object_keys,
    completed_objects,
    dead_messages,
    failures,
    job_batches,
    job_of_run,
    problem_messages,
    recent_jobs,
    status_counts,
)

__all__ = [
    "LATEST_VERSION", "LIVE_JOB_HOURS", "MIGRATIONS", "Connection", "Cursor", "batch_counts", "chunks", "batch_state",
    "claim_failed", "claim_for_job",
    "completed_by_job", "completed_objects", "dead_messages", "effective_batch_size", "expire_stalled_batch",
    "fail_batch", "failures",
    "live_runs", "finish_batch", "get_job", "held_by_other_jobs", "in_transaction", "insert_chunk",
    "job_batches",
    "job_of_run", "job_status_counts", "load_checkpoint", "mark_dispatched", "migrate", "mirror_airflow_run",
    "object_lock", "object_references", "object_unlock", "plan_batches", "problem_messages", "progress_of_job",
    "purge_completed", "recent_jobs", "record_outcomes", "reopen_batch", "save_checkpoint", "schema_version",
    "slice_checkpoints", "start_batch", "start_job", "status_counts", "update_job", "utc_naive",
    "completed_elsewhere", "completed_keys", "completed_object_keys", "forget_upload", "note_uploads",
    "orphan_uploads", "stalled_upload_batches", "upload_state",
    "RefreshRow", "advance_watermark", "claim_changed", "day_in_progress", "erasable",
    "forget_message", "freshness", "record_refreshed_days", "forget_rechecks", "note_recheck",
    "rechecks", "refresh_rows", "tracked_per_day", "watermark",
]
