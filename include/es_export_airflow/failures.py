"""The one place a core error becomes an Airflow one."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from es_export.errors import ExportError


@contextmanager
def failing_fast() -> Generator[None, None, None]:
    """Errors retrying cannot fix (a bad param, a missing index, an unfinished extract) fail the task
    without retries, with the core error's message; retryable ones are left to the task's retries."""
    try:
        yield
    except ExportError as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise
