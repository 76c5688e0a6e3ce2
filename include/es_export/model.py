"""The records of an export: statuses, jobs, batches, attempts, outcomes, and the retry policy.

Plain dataclasses shared by tracking (which stores them), the pipeline (which makes them) and the
Airflow and Lambda edges (which carry batch descriptors through XCom and queues).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Status(enum.StrEnum):
    """Of a message: pending -> running -> completed | failed -> (retry) ... -> dead after the last attempt.

    Batches and jobs use pending, running, completed and failed.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(frozen=True)
class Job:
    job_id: int
    dag_id: str
    run_id: str
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "dag_id": self.dag_id, "run_id": self.run_id,
                "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(int(d["job_id"]), d["dag_id"], d["run_id"], datetime.fromisoformat(d["start"]),
                   datetime.fromisoformat(d["end"]))


@dataclass(frozen=True)
class AirflowRun:
    """What job_runs mirrors of an Airflow DAG run."""

    dag_id: str
    run_id: str
    state: str
    try_number: int
    start: datetime | None
    end: datetime | None
    url: str
    interval_start: datetime
    interval_end: datetime
    note: str = ""


@dataclass(frozen=True)
class Batch:
    """What travels through XCom: a descriptor, never the ids."""

    job_id: int
    batch_id: int
    batch_no: int
    size: int

    def as_dict(self) -> dict[str, int]:
        return {"job_id": self.job_id, "batch_id": self.batch_id, "batch_no": self.batch_no, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Batch:
        return cls(int(d["job_id"]), int(d["batch_id"]), int(d["batch_no"]), int(d["size"]))


@dataclass(frozen=True)
class TrackedMessage:
    row_id: int
    message_id: str
    message_ts: datetime
    s3_key: str | None = None  # where an earlier export put it, if any
    index: str | None = None  # the concrete index that holds it (a data stream's backing index, a daily index)


@dataclass(frozen=True)
class Outcome:
    row_id: int
    message_id: str
    ok: bool
    s3_key: str | None = None
    error: str | None = None
    source_version: str | None = None  # of what the object holds (source.version_of)


@dataclass(frozen=True)
class BatchAttempt:
    """One attempt at a batch. `token` fences it: every write checks it is still the batch's latest."""

    batch_id: int
    token: int
    messages: list[TrackedMessage]
    already_completed: bool = False
    job_id: int = 0  # as batch_progress holds them (files are named by these, never by a payload's)
    batch_no: int = 0


@dataclass(frozen=True)
class BatchProgress:
    """What a batch waiting on SQS looks like to the one poll its job's waits share (`tracking.progress_of_job`)."""

    batch_id: int
    status: Status
    receives: int  # how often the Lambda received the batch's current queue message (not stalls)
    undispatched: bool  # dispatched_at IS NULL: the plan stopped before queueing it, or a stall un-queued it
    lease_expired: bool  # lease_expires_at is in the past (by the database's clock)

    def settled(self, *, max_receive: int) -> str | None:
        """Why the waiting `process` task must look at the batch again, or None while it only waits.

        The same conditions the task's poke acts on: completed (done), failed `max_receive` times
        (fails the task), not queued (queue it), pending or running past its lease (stalled).
        """
        if self.status in (Status.COMPLETED, Status.DEAD):
            return self.status.value
        if self.status is Status.FAILED and self.receives >= max_receive:
            return "failed_out"
        if self.undispatched:
            return "undispatched"
        if self.status in (Status.PENDING, Status.RUNNING) and self.lease_expired:
            return "lease_expired"
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """After a failure a message waits base * 2^(attempts-1) seconds (capped); after max_attempts it is dead."""

    max_attempts: int = 5
    base_seconds: int = 60
    max_seconds: int = 3600


@dataclass(frozen=True)
class JobShare:
    """How many of an interval's messages one job holds or exported."""

    job_id: int | None
    dag_id: str | None
    run_id: str | None
    messages: int

    def label(self) -> str:
        return f"job {self.job_id} ({self.dag_id} run {self.run_id})"


@dataclass(frozen=True)
class Checkpoint:
    """How far an extract got: every id with a timestamp below last_ts_ms is tracked (ids_before of them).

    Inside a group of ids that share last_ts_ms, `at_last` of them are tracked too, up to the sort
    values `search_after` of the point-in-time `pit_id`: while that point-in-time lives (its
    keep-alive after the last page, also after a crash), a resume continues there instead of reading
    the whole group again. Without it, the group is read again from its start.
    """

    last_ts_ms: int
    ids_before: int
    ids_new: int
    finished: bool
    at_last: int = 0
    pit_id: str | None = None
    search_after: list[Any] | None = None


@dataclass(frozen=True)
class ExtractSlice:
    """One of `count` equal time ranges [start_ms, end_ms) of a job's interval, extracted by its own task.

    Time ranges, not a point-in-time `slice`: a PIT slice partitions by Lucene doc ids, which only
    hold within one PIT, so a slice retried under a new PIT could miss documents. A time range is
    the same on every attempt, on Elasticsearch and OpenSearch alike, and keeps the checkpoint exact.
    """

    no: int
    count: int
    start_ms: int
    end_ms: int

    def matches(self, start_ms: int | None, end_ms: int | None, position_ms: int | None = None) -> bool:
        """Whether a checkpoint saved with these bounds (and at this position) belongs to this slice.

        None bounds: saved before slicing, for the whole interval. A position outside the slice was
        written by code that knew no slices (a rollback), so it is not trusted either.
        """
        if position_ms is not None and not self.start_ms <= position_ms <= self.end_ms:
            return False
        if start_ms is None or end_ms is None:
            return self.count == 1
        return (start_ms, end_ms) == (self.start_ms, self.end_ms)

    def label(self) -> str:
        return f"slice {self.no + 1} of {self.count}"
