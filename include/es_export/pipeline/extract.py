"""Extract: stream an interval's ids out of Elasticsearch into message_tracking, resumably."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from es_export import source, tracking
from es_export.config import ExportConfig
from es_export.model import Checkpoint, Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    job_id: int
    ids_found: int
    ids_new: int
    seconds: float
    resumed: bool = False
    reopened: int = 0


class _IdCounter:
    """Counts streamed ids so a checkpoint can say exactly how many lie below a timestamp."""

    def __init__(self, cp: Checkpoint) -> None:
        self.last_ts_ms, self.below, self.at_last, self.new = cp.last_ts_ms, cp.ids_before, 0, cp.ids_new

    def add(self, ts_ms: int) -> None:
        if ts_ms > self.last_ts_ms:
            self.below += self.at_last
            self.last_ts_ms, self.at_last = ts_ms, 0
        self.at_last += 1

    def checkpoint(self, finished: bool = False) -> Checkpoint:
        if finished:
            return Checkpoint(self.last_ts_ms, self.below + self.at_last, self.new, True)
        return Checkpoint(self.last_ts_ms, self.below, self.new, False)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def extract(es: Any, conn: Any, cfg: ExportConfig, job: Job, *, max_reopen: int = 3) -> ExtractResult:
    """Stream the interval's ids out of Elasticsearch into message_tracking, resumably.

    After each chunk the position (a timestamp and how many ids lie below it) is committed with the
    ids, so a retried extract continues there instead of starting over; a point-in-time that
    expires mid-scan is reopened from the same position. Ids at the position's own timestamp are
    streamed again and ignored by INSERT IGNORE, which keeps the count exact.
    """
    started = time.monotonic()
    source.check_timestamp_field(es, cfg.messages_index, cfg.timestamp_field)
    saved = tracking.load_checkpoint(conn, job.job_id)
    resumed = saved is not None and not saved.finished
    cp = saved if saved is not None and resumed else Checkpoint(_ms(job.start), 0, 0, False)
    reopened = 0
    while True:
        try:
            cp = _extract_from(es, conn, cfg, job, cp, resumed=resumed or reopened > 0)
            break
        except source.PointInTimeExpired:
            conn.rollback()
            reopened += 1
            if reopened > max_reopen:
                raise
            cp = tracking.load_checkpoint(conn, job.job_id) or cp
            log.warning("extract job=%s: point-in-time expired, reopening at %s (attempt %d)",
                        job.job_id, cp.last_ts_ms, reopened)
    tracking.update_job(conn, job.job_id, ids_found=cp.ids_before, ids_new=cp.ids_new)
    result = ExtractResult(job.job_id, cp.ids_before, cp.ids_new, time.monotonic() - started, resumed, reopened)
    log.info("extract job=%s found=%d new=%d seconds=%.2f resumed=%s reopened=%d", job.job_id, result.ids_found,
             result.ids_new, result.seconds, resumed, reopened)
    return result


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Yield from `items` while a thread already fetches the next ones (at most `depth` ahead).

    The extract then takes about as long as the slower of Elasticsearch and MySQL, not their sum;
    memory stays bounded by `depth` chunks. An error of the producer is raised in the consumer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put(exc)
        finally:
            close = getattr(items, "close", None)
            if close:  # e.g. closes the scan's point-in-time when the consumer stopped early
                close()

    thread = threading.Thread(target=produce, name="extract-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


def _extract_from(es: Any, conn: Any, cfg: ExportConfig, job: Job, cp: Checkpoint, *,
                  resumed: bool) -> Checkpoint:
    counter = _IdCounter(cp)
    tracking.save_checkpoint(conn, job.job_id, cp, resumed=resumed)
    conn.commit()
    start = datetime.fromtimestamp(cp.last_ts_ms / 1000, tz=UTC)
    hits = source.stream_ids(es, cfg, max(start, job.start), job.end)
    for chunk in prefetched(tracking.chunks(hits, cfg.insert_chunk_size)):
        counter.new += tracking.insert_chunk(conn, chunk, dag_id=job.dag_id, run_id=job.run_id)
        for hit in chunk:
            counter.add(_ms(hit.timestamp))
        tracking.save_checkpoint(conn, job.job_id, counter.checkpoint())
        conn.commit()
    final = counter.checkpoint(finished=True)
    tracking.save_checkpoint(conn, job.job_id, final)
    conn.commit()
    return final
