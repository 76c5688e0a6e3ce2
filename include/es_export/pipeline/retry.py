"""The outcome of an es_message_retry job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from es_export import tracking
from es_export.model import Job, Status
from es_export.tracking import Connection

log = logging.getLogger(__name__)


@dataclass
class RetrySummary:
    job_id: int
    claimed: int
    completed: int
    failed: int
    dead: int
    unfinished: int
    dead_messages: list[dict[str, Any]]

    def brief(self) -> dict[str, Any]:
        """The summary without the dead messages (the alert names them): what a task returns."""
        return {k: v for k, v in vars(self).items() if k != "dead_messages"}


def summarize_retry(conn: Connection, job: Job) -> RetrySummary:
    """Outcome of a retry job; records it in job_runs."""
    row = tracking.get_job(conn, job.job_id)
    counts = tracking.job_status_counts(conn, job.job_id)
    summary = RetrySummary(
        job_id=job.job_id, claimed=int(row["to_export"] or 0), completed=counts.get(Status.COMPLETED, 0),
        failed=counts.get(Status.FAILED, 0), dead=counts.get(Status.DEAD, 0),
        unfinished=counts.get(Status.PENDING, 0) + counts.get(Status.RUNNING, 0),
        dead_messages=tracking.dead_messages(conn, job.job_id),
    )
    status = Status.COMPLETED if not (summary.failed or summary.dead or summary.unfinished) else Status.FAILED
    tracking.update_job(conn, job.job_id, status=status, completed=summary.completed,
                        failed=summary.failed + summary.dead, finished_at=tracking.utc_naive(datetime.now(UTC)))
    log.info("retry summary job=%s claimed=%d completed=%d failed=%d dead=%d unfinished=%d", job.job_id,
             summary.claimed, summary.completed, summary.failed, summary.dead, summary.unfinished)
    return summary
