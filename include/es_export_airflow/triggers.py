"""The wait of a `process` task in dispatch=sqs: a deferrable trigger whose waits share one poll per job.

Each mapped `process` task of an sqs run that finds its batch not done defers with a
BatchesSettledTrigger. In the triggerer (one asyncio loop for all its triggers) every trigger of
one job joins that job's poller: one asyncio task that, every `poll_seconds`, reads the job's
batch_progress rows with ONE statement (`tracking.progress_of_job`) in a thread, on a connection it
keeps open, and wakes each trigger whose batch settled (`BatchProgress.settled`). The task then
resumes, pokes once more (the checks of `batch_sensor._wait_for_sqs`) and finishes, fails or defers
again. 500 waiting batches cost one query per interval instead of 500 worker interpreters that
each connect and run two transactions.

A poller ends when no trigger waits on it; a trigger that is cancelled (its timeout, a cleared or
marked task, the triggerer stopping) leaves it. A failed poll is logged and tried again at the
next interval on a new connection: the triggerer runs everyone's triggers and must never fail
because the tracking database is away for a while.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Hashable
from typing import Any

from airflow.sdk import BaseHook, Connection
from airflow.triggers.base import BaseTrigger, TriggerEvent

from es_export.model import BatchProgress
from es_export.tracking import progress_of_job
from es_export_airflow.connections import MYSQL_CONN_ID, quick_mysql

log = logging.getLogger(__name__)

CLASSPATH = "es_export_airflow.triggers.BatchesSettledTrigger"


class BatchesSettledTrigger(BaseTrigger):
    """Fires once batch `batch_id` of job `job_id` settled: completed, failed `sqs_max_receive` times,
    not queued, past its lease, or gone; its event says which (`settled`). Polled every `poll_seconds`
    by its job's shared poller."""

    def __init__(self, *, job_id: int, batch_id: int, batch_no: int, poll_seconds: float, sqs_max_receive: int):
        super().__init__()
        self.job_id = int(job_id)
        self.batch_id = int(batch_id)
        self.batch_no = int(batch_no)
        self.poll_seconds = float(poll_seconds)
        self.sqs_max_receive = int(sqs_max_receive)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"job_id": self.job_id, "batch_id": self.batch_id, "batch_no": self.batch_no,
                           "poll_seconds": self.poll_seconds, "sqs_max_receive": self.sqs_max_receive}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        connection = await BaseHook.aget_connection(MYSQL_CONN_ID)
        waiter = _Waiter(self.batch_id, self.sqs_max_receive, self.poll_seconds)
        poller = _Poller.join(connection, self.job_id, waiter)
        try:
            reason, progress = await waiter.settled
        finally:
            poller.leave(waiter)
        yield TriggerEvent({"job_id": self.job_id, "batch_id": self.batch_id, "batch_no": self.batch_no,
                            "settled": reason, "status": progress.status.value if progress else None,
                            "receives": progress.receives if progress else None})


class _Waiter:
    """One trigger's wait: the future its poller resolves with (reason, the batch's row or None)."""

    def __init__(self, batch_id: int, max_receive: int, poll_seconds: float):
        self.batch_id, self.max_receive, self.poll_seconds = batch_id, max_receive, poll_seconds
        self.settled: asyncio.Future[tuple[str, BatchProgress | None]] = asyncio.get_running_loop().create_future()

    def check(self, rows: dict[int, BatchProgress]) -> None:
        if self.settled.done():
            return
        progress = rows.get(self.batch_id)
        reason = "missing" if progress is None else progress.settled(max_receive=self.max_receive)
        if reason:
            self.settled.set_result((reason, progress))


class _Poller:
    """The one poll loop of a job's waits in one event loop, on one tracking database."""

    # Per event loop: the triggerer has one; dag.test runs each trigger in an asyncio.run of its own.
    _running: dict[Hashable, _Poller] = {}

    @classmethod
    def join(cls, connection: Connection, job_id: int, waiter: _Waiter) -> _Poller:
        key = (asyncio.get_running_loop(), connection.host, connection.port, connection.schema, connection.login,
               job_id)
        poller = cls._running.get(key)
        if poller is None or poller.task.done():
            poller = cls._running[key] = cls(key, connection, job_id)
        poller.waiters.add(waiter)
        return poller

    def __init__(self, key: Hashable, connection: Connection, job_id: int):
        self.key, self.connection, self.job_id = key, connection, job_id
        self.waiters: set[_Waiter] = set()
        self._conn: Any = None
        self._lock = threading.Lock()  # the connection is used by one thread at a time
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"es_export poll of job {job_id}")

    def leave(self, waiter: _Waiter) -> None:
        self.waiters.discard(waiter)

    async def _run(self) -> None:
        failing = False
        try:
            while self.waiters:
                try:
                    rows = await asyncio.to_thread(self._fetch)
                    for waiter in list(self.waiters):
                        waiter.check(rows)
                    failing = False
                except Exception as exc:
                    log.warning("polling the batches of job %s failed (%s: %s); trying again in %.0f s",
                                self.job_id, type(exc).__name__, exc, self._interval(), exc_info=not failing)
                    failing = True
                if not self.waiters:
                    break
                await asyncio.sleep(self._interval())
        finally:
            # No await between the last look at the waiters and this: no trigger can join a poller
            # that is ending (join runs on this loop too).
            if self._running.get(self.key) is self:
                del self._running[self.key]
            for waiter in self.waiters:  # only when the loop stopped us: a trigger must not wait for ever
                if not waiter.settled.done():
                    waiter.settled.set_exception(RuntimeError(f"the poll of job {self.job_id}'s batches stopped"))
            # Closed in a thread: a poll may still be running in one (it holds the lock until it ends).
            threading.Thread(target=self._close, name=f"close poll of job {self.job_id}", daemon=True).start()

    def _interval(self) -> float:
        return min((w.poll_seconds for w in self.waiters), default=0.0)

    def _fetch(self) -> dict[int, BatchProgress]:
        with self._lock:
            if self._conn is None:
                self._conn = quick_mysql(self.connection)
                self._conn.autocommit(True)  # each poll sees the rows as they are now, in one statement
            try:
                return progress_of_job(self._conn, self.job_id)
            except Exception:
                self._close_locked()  # a new connection next time
                raise

    def _close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the poll connection of job %s failed", self.job_id, exc_info=True)
