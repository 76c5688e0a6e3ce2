"""Reconcile: check a run document by document, record its outcome, write its manifest."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from es_export import sink, source, tracking
from es_export.config import ExportConfig
from es_export.errors import ReconcileError
from es_export.model import Job, JobShare, Status
from es_export.pipeline import archive
from es_export.search import Searchable
from es_export.sink import S3Client
from es_export.tracking import Connection

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What a run did, as written to job_runs and the manifest."""

    job_id: int
    dag_id: str
    run_id: str
    interval_start: str
    interval_end: str
    es_count: int
    ids_found: int
    tracked: int
    completed: int
    failed: int
    pending: int
    dead: int
    batches: int
    to_export: int
    exported_this_run: int
    failed_this_run: int
    exported_by_others: int
    objects: int
    objects_expected: int
    documents: int
    documents_expected: int
    documents_missing: int
    documents_superseded: int
    bytes_written: int
    status: str = ""
    objects_missing: list[str] = field(default_factory=list)  # examples of keys completed rows name, S3 lacks
    objects_stray: list[str] = field(default_factory=list)  # examples of keys S3 holds, no completed row names
    exported_by: list[dict[str, Any]] = field(default_factory=list)
    held_by_others: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def brief(self) -> dict[str, Any]:
        """The report without its per-message failures (those are in the manifest): what a task returns."""
        return {k: v for k, v in vars(self).items() if k != "failures"}


def others_still_exporting(conn: Connection, job: Job) -> list[JobShare]:
    """Messages of the job's interval that other live runs claimed and are still exporting."""
    return tracking.held_by_other_jobs(conn, job)


def reconcile(es: Searchable, conn: Connection, s3: S3Client, cfg: ExportConfig, job: Job) -> Report:
    """Check that the run's counts add up, key by key and document by document; record the outcome, write
    the manifest. Documents no longer live are removed first (es_export.pipeline.archive).

    Messages another run exported count as done and are listed by job ("exported by"); the DAG
    waits for runs still exporting part of the interval before it calls this. Raises
    ReconcileError when the counts do not add up, or when messages failed, so the run is red and
    says why.
    """
    days = _days(job.start, job.end)
    batches = tracking.batch_counts(conn, job.job_id)
    held = tracking.held_by_other_jobs(conn, job)
    report = _count(es, conn, s3, cfg, job, days, batches, held)
    report.problems = _problems(report, batches, held)
    report.failures = tracking.failures(conn, job.job_id)
    report.status = Status.COMPLETED if not (report.problems or report.failed or report.dead) else Status.FAILED
    tracking.update_job(
        conn, job.job_id, status=report.status, es_count=report.es_count, completed=report.exported_this_run,
        exported_by_others=report.exported_by_others, failed=report.failed, objects=report.objects,
        finished_at=tracking.utc_naive(datetime.now(UTC)), last_error="; ".join(report.problems)[:4000] or None,
    )
    sink.put_json(s3, cfg.bucket, sink.manifest_key(cfg.prefix, job.dag_id, job.run_id), asdict(report),
                  sse_kms_key_id=cfg.sse_kms_key_id)
    log.info("reconcile job=%s status=%s es_count=%d tracked=%d completed=%d (by other runs %d) failed=%d "
             "objects=%d documents=%d", job.job_id, report.status, report.es_count, report.tracked,
             report.completed, report.exported_by_others, report.failed, report.objects, report.documents)
    for share in report.exported_by:
        if not share["this_run"]:
            log.info("reconcile job=%s: %d message(s) of the interval exported by job %s (%s run %s)", job.job_id,
                     share["messages"], share["job_id"], share["dag_id"], share["run_id"])
    if report.problems or report.failed or report.dead:
        raise ReconcileError(report.problems, failed=report.failed, dead=report.dead)
    return report


def _count(es: Searchable, conn: Connection, s3: S3Client, cfg: ExportConfig, job: Job, days: list[date],
           batches: dict[str, int], held: list[JobShare]) -> Report:
    """What Elasticsearch, tracking and S3 each hold for the interval (and its whole days, for S3)."""
    row = tracking.get_job(conn, job.job_id)
    by_status = tracking.status_counts(conn, job.start, job.end)
    whole = (datetime.combine(days[0], datetime.min.time(), UTC),
             datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), UTC))
    docs = archive.audit_days(conn, s3, cfg, days)
    shares = tracking.completed_by_job(conn, job.start, job.end)
    return Report(
        job_id=job.job_id, dag_id=job.dag_id, run_id=job.run_id,
        interval_start=job.start.isoformat(), interval_end=job.end.isoformat(),
        es_count=source.count_interval(es, cfg, job.start, job.end), ids_found=int(row["ids_found"] or 0),
        tracked=sum(by_status.values()),
        completed=by_status.get(Status.COMPLETED, 0), failed=by_status.get(Status.FAILED, 0),
        pending=by_status.get(Status.PENDING, 0) + by_status.get(Status.RUNNING, 0),
        dead=by_status.get(Status.DEAD, 0),
        batches=batches["batches"], to_export=int(row["to_export"] or 0),
        exported_this_run=batches["completed"], failed_this_run=batches["failed"],
        exported_by_others=sum(s.messages for s in shares if s.job_id != job.job_id),
        objects=docs.objects, objects_expected=docs.objects_expected,
        documents=docs.documents,
        documents_expected=tracking.status_counts(conn, *whole).get(Status.COMPLETED, 0),
        documents_missing=docs.missing, documents_superseded=docs.superseded,
        objects_missing=docs.missing_objects, objects_stray=docs.stray_objects,
        bytes_written=batches["bytes_written"],
        exported_by=[{**asdict(s), "this_run": s.job_id == job.job_id} for s in shares],
        held_by_others=[asdict(s) for s in held],
    )


def dead_messages(conn: Connection, job: Job) -> list[dict[str, Any]]:
    """The job's messages that ran out of attempts (for the alert)."""
    return tracking.dead_messages(conn, job.job_id)


def _problems(r: Report, batches: dict[str, int], held: list[JobShare]) -> list[str]:
    problems = []
    if r.es_count != r.ids_found:
        problems.append(f"Elasticsearch now holds {r.es_count} messages for the interval but the extract saw "
                        f"{r.ids_found}; documents changed during the run, run it again")
    if r.tracked < r.ids_found:
        problems.append(f"only {r.tracked} of the {r.ids_found} ids found are tracked in message_tracking")
    held_count = sum(s.messages for s in held)
    for share in held:
        problems.append(f"{share.messages} message(s) of the interval are still being exported by {share.label()}")
    if r.pending - held_count > 0:
        problems.append(f"{r.pending - held_count} message(s) of the interval are still pending or running "
                        "(a batch did not finish)")
    if batches["finished"] != batches["batches"]:
        problems.append(f"{batches['batches'] - batches['finished']} of {batches['batches']} batch(es) did not finish")
    if r.objects != r.objects_expected:
        problems.append(f"S3 holds {r.objects} objects for the interval's day(s) but the completed messages of "
                        f"those days are in {r.objects_expected}")
    if r.objects_missing:
        problems.append(f"objects that completed messages name are missing from S3, e.g. {r.objects_missing[:5]}")
    if r.objects_stray:
        problems.append(f"S3 holds objects that no completed message names, e.g. {r.objects_stray[:5]}")
    if r.documents != r.documents_expected:
        problems.append(f"S3 holds {r.documents} documents for the interval's day(s) but those days have "
                        f"{r.documents_expected} completed messages")
    if r.documents_missing:
        problems.append(f"{r.documents_missing} completed message(s) are missing from the object their s3_key names")
    if r.documents_superseded:
        problems.append(f"{r.documents_superseded} document(s) in S3 are superseded copies no message refers to")
    return problems


def days_of(job: Job) -> list[date]:
    """The UTC days the job's interval touches (each has its own folder on S3)."""
    return _days(job.start, job.end)


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
