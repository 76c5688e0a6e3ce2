"""One exception hierarchy for the package.

`retryable` tells the caller (an Airflow task, the Lambda handler) whether trying the same work
again can help: a node that is down can come back, a bad parameter cannot. Errors whose facts a
caller may act on take them as arguments and build their message once, here.
"""

from __future__ import annotations

from collections.abc import Sequence


class ExportError(Exception):
    """Base class of every error this package raises on purpose."""

    retryable: bool = False


class ConfigError(ExportError, ValueError):
    """A setting or a run parameter is invalid; fix it and trigger again."""


class TransientError(ExportError):
    """A service failed in a way that may pass; retrying the task is the right reaction."""

    retryable = True


class SourceError(ExportError):
    """Elasticsearch holds something we cannot work with (missing index, wrong mapping)."""


class SourceUnavailable(TransientError):
    """The search cluster could not be reached, timed out or answered 5xx/429: a node down, a restart."""


class PartialResults(TransientError):
    """The search cluster answered with only part of the data (a shard failed or was missing, or the
    search timed out): never used, because exporting it would lose messages in silence."""


class TrackingError(ExportError):
    """The tracking database is not in the state this step needs."""


class ExtractIncomplete(TrackingError):
    """A step needs the whole extract, and a slice of it has not finished (e.g. marked success by hand)."""

    def __init__(self, job_id: int, unfinished: Sequence[int], slices: int) -> None:
        self.job_id, self.unfinished, self.slices = job_id, list(unfinished), slices
        super().__init__(
            f"the extract of job {job_id} has not finished slice(s) {self.unfinished} of {slices} (map index(es) "
            f"{[n - 1 for n in self.unfinished]} of the extract task; see their logs), so nothing was exported; "
            "clear those extract tasks (not only later ones) so they run to the end")


class TooManyRuns(TrackingError):
    """As many runs of the DAG as `max_live_runs` allows are exporting already: this one does not start."""

    def __init__(self, dag_id: str, live: list[str], cap: int) -> None:
        self.dag_id, self.live, self.cap = dag_id, list(live), cap
        super().__init__(
            f"{len(self.live)} run(s) of {dag_id} are exporting already ({', '.join(self.live[:5])}), and "
            f"max_live_runs={cap} (es_message_export_config) allows no more: this run did not start and "
            "changed nothing. Trigger it again once they finished; for a backfill, give it a max_active_runs "
            "of at most that many")


class ReconcileError(ExportError):
    """The counts of a run do not add up (`problems`), or messages of it failed: something was lost or
    exported short."""

    def __init__(self, problems: Sequence[str], *, failed: int = 0, dead: int = 0) -> None:
        self.problems, self.failed, self.dead = list(problems), failed, dead
        if self.problems:
            message = "the export does not add up: " + "; ".join(self.problems)
        else:
            message = (f"{failed} message(s) of the interval failed to export and {dead} are dead (reasons in "
                       "message_tracking.last_error and the run's manifest); es_message_retry re-exports failed "
                       "ones, dead ones need revive_dead")
        super().__init__(message)


class StaleAttempt(TrackingError):
    """A newer attempt took the batch over (or the plan replaced it); this attempt's writes are refused.

    `token` is the refused attempt (None when none had started); `now_at` and `now_status` the batch's
    attempt and status now, both None when the batch no longer exists.
    """

    def __init__(self, batch_id: int, token: int | None, *, now_at: int | None = None,
                 now_status: str | None = None) -> None:
        self.batch_id, self.token, self.now_at, self.now_status = batch_id, token, now_at, now_status
        if now_at is not None:
            message = (f"batch {batch_id} is now at attempt {now_at} ({now_status}); attempt {token}'s results are "
                       "discarded so no message is counted twice")
        elif token is not None:
            message = (f"batch {batch_id} no longer exists (a rerun replaced the plan); attempt {token}'s results "
                       "are discarded, the rerun exports these messages")
        else:
            message = f"batch {batch_id} does not exist in batch_progress; was the plan replaced?"
        super().__init__(message)
