"""The steps of an export run: extract, plan, process a batch, reconcile; and the retry job's summary.

Each step takes ready clients (Elasticsearch, a DB-API connection, boto3 S3) and plain values, so
an Airflow task, the Lambda handler and a test all call the same function.

    extract    ids of an interval into message_tracking (resumable, checkpointed)
    plan       the run's job, its claim, its batches (also for es_message_retry)
    process    one batch: details, documents, uploads, outcomes (fenced), superseded documents removed
    archive    which documents of a day are live: pruning superseded copies and orphan files, the key audit
    reconcile  Elasticsearch vs MySQL vs S3, document by document; the manifest
    retry      es_message_retry's summary
    refresh    es_message_refresh: exported messages whose source changed, and late messages, taken again
    retention  completed tracking rows older than the retention, purged
"""

from es_export.pipeline.archive import audit_days, erase, prune, sweep_orphans
from es_export.pipeline.extract import (
    ExtractResult,
    check_extract_finished,
    extract,
    finish_extract,
    prefetched,
    slices_of,
    unfinished_slices,
)
from es_export.pipeline.plan import open_job, open_retry_job, plan, plan_retry, plan_taken
from es_export.pipeline.process import BatchResult, fetch_isolating, process_batch
from es_export.pipeline.reconcile import (
    Report,
    days_of,
    dead_messages,
    others_still_exporting,
    reconcile,
)
from es_export.pipeline.refresh import RefreshFound, RefreshSummary, find_changes, finish_refresh, open_refresh_job
from es_export.pipeline.retention import purge_tracking
from es_export.pipeline.retry import RetrySummary, summarize_retry

__all__ = [
    "RefreshFound", "RefreshSummary", "erase", "plan_taken", "find_changes", "finish_refresh", "open_refresh_job",
    "BatchResult", "ExtractResult", "Report", "RetrySummary", "audit_days", "check_extract_finished", "days_of",
    "dead_messages", "extract", "fetch_isolating", "finish_extract", "open_job", "open_retry_job",
    "others_still_exporting", "plan", "plan_retry", "prefetched", "process_batch", "prune", "purge_tracking",
    "reconcile", "slices_of", "summarize_retry", "sweep_orphans", "unfinished_slices",
]
