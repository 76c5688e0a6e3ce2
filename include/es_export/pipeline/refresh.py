"""Refresh: bring exported messages up to date with their source, and export late messages.

A message keeps changing after its export: history is appended, its status document is updated in
place, audit entries arrive for days. A refresh run looks at the related documents written or
changed in its window [watermark - overlap, now) by each related index's change-time field, and
takes the exported messages they name whose source is no longer what their object holds (a digest
of the source, `source_version`, is kept per message at export). Those are exported again by the
ordinary batch machinery. The overlap catches documents that became visible late (an index's
refresh interval, writers' clocks); comparing digests keeps it from rewriting anything twice.

Messages a worker was exporting while they changed are noted and looked at again by the next run.
Days of the last `refresh_lookback_days` whose cluster count exceeds their tracked count are
extracted again; the new (late) ids are exported with the rest. The watermark moves to the run's
start only when every message the run took has finished, so a run that stops loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

from es_export import sink, source, tracking
from es_export.config import ExportConfig, RefreshParams
from es_export.model import Job, Status
from es_export.pipeline.process import fetch_isolating
from es_export.search import Searchable
from es_export.sink import S3Client
from es_export.tracking import Connection, RefreshRow

log = logging.getLogger(__name__)


@dataclass
class RefreshFound:
    """What a refresh run found, message by message (a message counts once per reason)."""

    messages_changed: int = 0  # distinct messages named by changed related documents (and rechecks)
    rewritten: int = 0  # exported messages whose source changed (or left pending by a stopped run): taken
    unchanged: int = 0  # exported, source as in the object (seen again through the overlap)
    untracked: int = 0  # never exported, or purged by retention: reported, not exported
    left_to_others: int = 0  # a live job or a worker holds them: looked at again next run
    not_exported_yet: int = 0  # failed or dead: es_message_retry exports the state at its time
    deleted_in_source: int = 0  # the message is gone from the cluster: the archive keeps what it took
    late: int = 0  # ids found on a past day after its export, taken to export
    late_days: list[str] | None = None

    def add(self, other: RefreshFound) -> None:
        for name, value in asdict(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)


def window_start(conn: Connection, cfg: ExportConfig, dag_id: str, params: RefreshParams, now: datetime) -> datetime:
    """Where a run's window starts: `since`, else the watermark less the overlap, else (the first run) the
    overlap before now. The first run does not look further back on its own: every message exported
    before the package kept digests would be rewritten; `since` does that once, when asked."""
    if params.since is not None:
        return params.since
    mark = tracking.watermark(conn, dag_id) or now
    return mark - timedelta(minutes=cfg.refresh_overlap_minutes)


def open_refresh_job(es: Searchable, conn: Connection, cfg: ExportConfig, *, dag_id: str, run_id: str,
                     params: RefreshParams, now: datetime | None = None) -> Job:
    """Refuse related indices without a change-time field, migrate the schema if needed and open the run's
    job; its interval is the window of change times."""
    source.check_changed_fields(es, cfg)
    tracking.migrate(conn)
    end = now or datetime.now(UTC)
    start = min(window_start(conn, cfg, dag_id, params, end), end - timedelta(microseconds=1))
    return tracking.start_job(conn, dag_id=dag_id, run_id=run_id, start=start, end=end,
                              dispatch=params.dispatch.value, batch_size=params.batch_size, reprocess=False)


def find_changes(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job) -> RefreshFound:
    """Take the exported messages whose source changed in the job's window, and the late ones."""
    rechecked = tracking.rechecks(conn)
    found = RefreshFound()
    held: set[str] = set()  # noted for the next run again: not forgotten below
    ids = _chained(rechecked, source.changed_message_ids(es, cfg, job.start, job.end))
    for chunk in _chunks(ids, cfg.details_page_size):
        found.add(_take_changed(es, conn, cfg, job, chunk, held))
    tracking.forget_rechecks(conn, [m for m in rechecked if m not in held])
    late_days = _late_days(es, conn, cfg, job, job.end.date())
    found.late_days = [d.isoformat() for d in late_days]
    for day in late_days:
        found.late += _extract_day(es, conn, cfg, job, day)
    log.info("refresh job=%s window=[%s, %s) %s", job.job_id, job.start.isoformat(), job.end.isoformat(), found)
    return found


def _chained(first: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _chunks(ids: Iterator[str], size: int) -> Iterator[list[str]]:
    """Distinct ids, `size` at most per chunk (an id named in two chunks is taken by the first)."""
    while chunk := list(dict.fromkeys(islice(ids, size))):
        yield chunk


def _take_changed(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job, ids: list[str],
                  held_ids: set[str]) -> RefreshFound:
    tracked = tracking.refresh_rows(conn, job, ids)
    found = RefreshFound(messages_changed=len(ids), untracked=len(ids) - len(tracked))
    rows = [r for r in tracked if r.job_id != job.job_id]  # this job's own were taken by an earlier try
    held = [r for r in rows if r.held]
    tracking.note_recheck(conn, [r.message_id for r in held])
    held_ids.update(r.message_id for r in held)
    exported = [r for r in rows if not r.held and r.status == Status.COMPLETED]
    # Pending and held by no live job: a run that stopped before exporting it (an earlier refresh, too).
    orphaned = [r for r in rows if not r.held and r.status == Status.PENDING]
    found.left_to_others = len(held)
    found.not_exported_yet = len(rows) - len(held) - len(exported) - len(orphaned)
    changed = _source_changed(es, cfg, exported, found)
    found.rewritten = tracking.claim_changed(conn, job, [r.row_id for r in changed + orphaned])
    return found


def _source_changed(es: Searchable, cfg: ExportConfig, rows: list[RefreshRow], found: RefreshFound) -> list[RefreshRow]:
    """The rows whose object no longer holds what the source holds (and those whose source cannot be
    read: their batch records why). A message gone from the cluster keeps its object."""
    details, unreadable = fetch_isolating(es, cfg, [r.message_id for r in rows],
                                          {r.message_id: r.index for r in rows})
    changed = []
    for r in rows:
        if r.message_id in unreadable:
            changed.append(r)
        elif details[r.message_id].message is None:
            found.deleted_in_source += 1
        elif source.version_of(details[r.message_id]) != r.source_version:
            changed.append(r)
        else:
            found.unchanged += 1
    return changed


def _late_days(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job, today: date) -> list[date]:
    """Past days, exported already and exported by no live job now, whose cluster holds more messages than
    are tracked: messages indexed after their day's extract (a delayed producer, a replayed queue)."""
    first = today - timedelta(days=cfg.refresh_lookback_days)
    tracked = tracking.tracked_per_day(conn, first, today)
    late = []
    for day in sorted(tracked):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if source.count_interval(es, cfg, start, start + timedelta(days=1)) > tracked[day] \
                and not tracking.day_in_progress(conn, job, day):
            late.append(day)
    return late


def _extract_day(es: Searchable, conn: Connection, cfg: ExportConfig, job: Job, day: date) -> int:
    """Track the day's ids that are not yet (INSERT IGNORE), then take the day's messages left to export."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    new = 0
    hits = source.stream_ids(es, cfg, start, start + timedelta(days=1))
    while chunk := list(islice(hits, cfg.insert_chunk_size)):
        new += tracking.insert_chunk(conn, chunk, job=job, check_moved=lambda moved: source.refuse_copies(es, moved))
        conn.commit()
    tracking.claim_for_job(conn, replace(job, start=start, end=start + timedelta(days=1)), reprocess=False)
    return new


@dataclass
class RefreshSummary:
    job_id: int
    window_start: str
    window_end: str
    taken: int
    completed: int
    failed: int
    unfinished: int
    watermark: str | None
    lag_minutes: float
    found: dict[str, Any] | None
    days: dict[str, int]  # day -> messages of it this run exported

    def brief(self) -> dict[str, Any]:
        return asdict(self)


def finish_refresh(conn: Connection, s3: S3Client, cfg: ExportConfig, job: Job,
                   found: dict[str, Any] | None) -> RefreshSummary:
    """Record the run's outcome (job_runs, the days it brought up to date, its manifest). The watermark
    moves to the run's start only when the search for changes finished (`found`) and nothing the run
    took is unfinished; a failed message is left to es_message_retry, which exports its state then."""
    counts = tracking.job_status_counts(conn, job.job_id)
    unfinished = counts.get(Status.PENDING, 0) + counts.get(Status.RUNNING, 0)
    if found is not None and not unfinished:
        tracking.advance_watermark(conn, job.dag_id, job.end, job_id=job.job_id)
    mark = tracking.watermark(conn, job.dag_id)
    lag = (datetime.now(UTC) - mark).total_seconds() / 60 if mark else 0.0
    failed = counts.get(Status.FAILED, 0) + counts.get(Status.DEAD, 0)
    summary = RefreshSummary(job.job_id, job.start.isoformat(), job.end.isoformat(), sum(counts.values()),
                             counts.get(Status.COMPLETED, 0), failed, unfinished, mark.isoformat() if mark else None,
                             round(lag, 1), found, tracking.record_refreshed_days(conn, job))
    ok = found is not None and not unfinished and not failed
    tracking.update_job(conn, job.job_id, status=Status.COMPLETED if ok else Status.FAILED,
                        completed=summary.completed, failed=failed, ids_new=int((found or {}).get("late") or 0),
                        finished_at=tracking.utc_naive(datetime.now(UTC)))
    sink.put_json(s3, cfg.bucket, sink.manifest_key(cfg.prefix, job.dag_id, job.run_id), asdict(summary),
                  sse_kms_key_id=cfg.sse_kms_key_id)
    log.info("refresh summary %s", summary)
    return summary
