"""Extract: stream an interval's ids out of Elasticsearch into message_tracking, resumably."""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from es_export import source, tracking
from es_export.config import ExportConfig
from es_export.errors import ConfigError, ExtractIncomplete
from es_export.model import Checkpoint, ExtractSlice, Job
from es_export.search import Searchable
from es_export.tracking import Connection, Cursor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    job_id: int
    ids_found: int
    ids_new: int
    seconds: float
    resumed: bool = False
    reopened: int = 0
    slice_no: int = 0


class _IdCounter:
    """Counts streamed ids so a checkpoint can say exactly how many lie below a timestamp, and how many
    of those at it were read, up to which position of the scan."""

    def __init__(self, cp: Checkpoint) -> None:
        self.last_ts_ms, self.below, self.new = cp.last_ts_ms, cp.ids_before, cp.ids_new
        self.at_last = cp.at_last if cp.search_after is not None else 0
        self.position: source.ScanPosition | None = (source.ScanPosition(cp.pit_id, cp.search_after)
                                                     if cp.pit_id and cp.search_after is not None else None)

    def add(self, hit: source.IdHit) -> None:
        ts_ms = _ms(hit.timestamp)
        if ts_ms > self.last_ts_ms:
            self.below += self.at_last
            self.last_ts_ms, self.at_last = ts_ms, 0
        self.at_last += 1
        self.position = hit.position

    def checkpoint(self, finished: bool = False) -> Checkpoint:
        if finished:
            return Checkpoint(self.last_ts_ms, self.below + self.at_last, self.new, True)
        position = self.position
        return Checkpoint(self.last_ts_ms, self.below, self.new, False, self.at_last,
                          position.pit_id if position else None, position.search_after if position else None)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def slices_of(job: Job, count: int) -> list[ExtractSlice]:
    """The job's interval cut into `count` time ranges of equal length (whole milliseconds)."""
    start, end = _ms(job.start), _ms(job.end)
    if count < 1 or count > max(1, end - start):
        raise ConfigError(f"extract_slices={count} cannot cut the interval {job.start.isoformat()} to "
                          f"{job.end.isoformat()} into whole milliseconds; use fewer slices")
    cuts = [start + (end - start) * i // count for i in range(count + 1)]
    return [ExtractSlice(i, count, cuts[i], cuts[i + 1]) for i in range(count)]


def _bounds(job: Job, part: ExtractSlice) -> tuple[datetime, datetime]:
    # The outer edges stay the job's own datetimes, so a single slice queries exactly the interval.
    start = job.start if part.no == 0 else _at_ms(part.start_ms)
    end = job.end if part.no == part.count - 1 else _at_ms(part.end_ms)
    return start, end


def extract(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job, part: ExtractSlice | None = None, *,
            max_reopen: int = 3) -> ExtractResult:
    """Stream the ids of the interval (or of one slice of it) out of Elasticsearch into message_tracking.

    After each chunk the position (a timestamp and how many ids lie below it) is committed with the
    ids, so a retried extract continues there instead of starting over; a point-in-time that
    expires mid-scan is reopened from the same position. Ids at the position's own timestamp are
    streamed again and ignored by INSERT IGNORE, which keeps the count exact. A whole-interval
    extract records its counts on the job; a sliced one leaves that to finish_extract.
    """
    started = time.monotonic()
    part = part or slices_of(job, 1)[0]
    source.check_timestamp_field(es, cfg.messages_index, cfg.timestamp_field)
    saved = tracking.load_checkpoint(conn, job.job_id, part)
    resumed = saved is not None and not saved.finished
    cp = saved if saved is not None and resumed else Checkpoint(part.start_ms, 0, 0, False)
    reopened = 0
    while True:
        try:
            cp = _extract_from(es, conn, cfg, job, part, cp, resumed=resumed or reopened > 0)
            break
        except source.PointInTimeExpired:
            conn.rollback()
            reopened += 1
            if reopened > max_reopen:
                raise
            # A new point-in-time: the group at the position's timestamp is read again from its start.
            cp = replace(tracking.load_checkpoint(conn, job.job_id, part) or cp, at_last=0, pit_id=None,
                         search_after=None)
            log.warning("extract job=%s %s: point-in-time expired, reopening at %s (attempt %d)",
                        job.job_id, part.label(), cp.last_ts_ms, reopened)
    if part.count == 1:
        tracking.update_job(conn, job.job_id, ids_found=cp.ids_before, ids_new=cp.ids_new)
    result = ExtractResult(job.job_id, cp.ids_before, cp.ids_new, time.monotonic() - started, resumed, reopened,
                           part.no)
    log.info("extract job=%s %s found=%d new=%d seconds=%.2f resumed=%s reopened=%d", job.job_id, part.label(),
             result.ids_found, result.ids_new, result.seconds, resumed, reopened)
    return result


def unfinished_slices(conn: Connection, job: Job, count: int) -> list[int]:
    """Numbers (from 1) of the slices of the job's extract that have not finished."""
    parts = slices_of(job, count)
    done = tracking.slice_checkpoints(conn, job.job_id, parts)
    return [p.no + 1 for p in parts if not (p.no in done and done[p.no].finished)]


def check_extract_finished(conn: Connection, job: Job, count: int) -> None:
    """ExtractIncomplete, naming the slices, unless every slice of the job's extract finished."""
    unfinished = unfinished_slices(conn, job, count)
    if unfinished:
        raise ExtractIncomplete(job.job_id, unfinished, count)


def finish_extract(conn: Connection, job: Job, count: int) -> tuple[int, int]:
    """Check that every slice finished and record the sums on the job: (ids found, ids new)."""
    check_extract_finished(conn, job, count)
    done = tracking.slice_checkpoints(conn, job.job_id, slices_of(job, count))
    found, new = sum(cp.ids_before for cp in done.values()), sum(cp.ids_new for cp in done.values())
    tracking.update_job(conn, job.job_id, ids_found=found, ids_new=new)
    return found, new


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


def _extract_from(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job, part: ExtractSlice,
                  cp: Checkpoint, *, resumed: bool) -> Checkpoint:
    counter = _IdCounter(cp)
    tracking.save_checkpoint(conn, job.job_id, cp, part=part, resumed=resumed)
    conn.commit()
    start, end = _bounds(job, part)
    if counter.position is not None:
        log.info("extract job=%s %s: resuming in its point-in-time after %d id(s) at %s", job.job_id, part.label(),
                 counter.at_last, counter.last_ts_ms)
    hits = source.stream_ids(es, cfg, max(_at_ms(cp.last_ts_ms), start), end, resume=counter.position)
    for chunk in prefetched(tracking.chunks(hits, cfg.insert_chunk_size)):
        counter = _write_chunk(es, conn, job, part, counter, chunk)
    final = counter.checkpoint(finished=True)
    tracking.save_checkpoint(conn, job.job_id, final, part=part)
    conn.commit()
    return final


def _write_chunk(es: Searchable, conn: Connection, job: Job, part: ExtractSlice, counter: _IdCounter,
                 chunk: list[Any]) -> _IdCounter:
    """Insert a chunk of ids and the position after it in one transaction; returns the counter after it.

    Run again on a deadlock or lock wait timeout: slices inserting into the same unique index
    (or a rerun finding most ids already tracked) can lock each other's gaps.
    """
    def check_moved(moved: list[tuple[str, str, str]]) -> None:
        source.refuse_copies(es, moved)

    def work(_cur: Cursor) -> _IdCounter:
        after = copy.copy(counter)  # a failed attempt leaves the caller's counter as it was
        after.new += tracking.insert_chunk(conn, chunk, job=job, check_moved=check_moved)
        for hit in chunk:
            after.add(hit)
        tracking.save_checkpoint(conn, job.job_id, after.checkpoint(), part=part)
        return after

    return tracking.in_transaction(conn, work)
