"""One exception hierarchy for the package.

`retryable` tells the caller (an Airflow task, the Lambda handler) whether trying the same work
again can help: a node that is down can come back, a bad parameter cannot.
"""

from __future__ import annotations


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


class ReconcileError(ExportError):
    """The counts of a run do not add up: something was lost or exported short."""


class StaleAttempt(TrackingError):
    """A newer attempt took the batch over (or the plan replaced it); this attempt's writes are refused."""
