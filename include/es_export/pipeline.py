"""The steps of an export run: extract, plan, process a batch, reconcile.

Each step takes ready clients (Elasticsearch, a DB-API connection, boto3 S3) and plain values, so
an Airflow task, the Lambda handler and a test all call the same function.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from es_export import sink, source, tracking
from es_export.config import ExportConfig, Layout, RunParams
from es_export.errors import ConfigError, ExportError, ReconcileError, StaleAttempt
from es_export.model import Batch, BatchAttempt, Checkpoint, Job, JobShare, Outcome, Status, TrackedMessage

log = logging.getLogger(__name__)


def open_job(conn: Any, *, dag_id: str, run_id: str, params: RunParams) -> Job:
    """Migrate the schema if needed and get the job_runs row of this run."""
    tracking.migrate(conn)
    return tracking.start_job(conn, dag_id=dag_id, run_id=run_id, start=params.start, end=params.end,
                              dispatch=params.dispatch.value, batch_size=params.batch_size,
                              reprocess=params.reprocess)


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
    cp = saved if resumed else Checkpoint(_ms(job.start), 0, 0, False)
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


def plan(conn: Any, cfg: ExportConfig, job: Job, params: RunParams) -> list[Batch]:
    """Batches of the messages this run must export; at most cfg.max_batches of them."""
    to_export = tracking.claim_for_job(conn, job, reprocess=params.reprocess)
    size = _batch_size(cfg, to_export, params.batch_size)
    batches = tracking.plan_batches(conn, job, batch_size=size)
    tracking.update_job(conn, job.job_id, batches=len(batches), to_export=to_export)
    log.info("plan job=%s to_export=%d batch_size=%d batches=%d", job.job_id, to_export, size, len(batches))
    return batches


def _batch_size(cfg: ExportConfig, total: int, batch_size: int) -> int:
    size = tracking.effective_batch_size(total, min(batch_size, cfg.max_batch_size), cfg.max_batches)
    if size > cfg.max_batch_size:
        raise ConfigError(f"{total} messages do not fit in max_batches={cfg.max_batches} batches of at most "
                          f"max_batch_size={cfg.max_batch_size}; export a shorter range (a backfill splits "
                          "it into days) or raise max_batches (at most 1024)")
    return size


@dataclass(frozen=True)
class BatchResult:
    job_id: int
    batch_id: int
    batch_no: int
    attempted: int
    completed: int
    failed: int
    bytes_written: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_document(details: source.MessageDetails, *, job_id: int, batch_id: int, run_id: str,
                   exported_at: str) -> dict[str, Any]:
    """The JSON document of one message: what Elasticsearch holds, plus export metadata."""
    return {
        "message_id": details.message_id,
        "message": details.message,
        **details.related,
        "export": {"job_id": job_id, "batch_id": batch_id, "run_id": run_id, "exported_at": exported_at},
    }


def process_batch(es: Any, conn: Any, s3: Any, cfg: ExportConfig, batch: Batch, *, run_id: str,
                  lease_seconds: int | None = None) -> BatchResult:
    """Export one batch; every message ends completed or failed with its reason.

    A message whose details cannot be read (bad related documents) is found by splitting the batch
    and fails alone. The whole attempt fails only when it cannot proceed at all (Elasticsearch or
    MySQL unreachable, an index missing): each of its messages then spends an attempt, and the
    caller's retry runs it again, skipping what was done. Every write is fenced by the attempt's
    token, so a stale attempt (a Lambda re-invoked, a queue delivering twice) changes nothing.
    """
    started = time.monotonic()
    attempt = tracking.start_batch(conn, batch.batch_id, lease_seconds=lease_seconds or cfg.lease_seconds)
    if attempt.already_completed:
        log.info("batch job=%s batch=%s no=%s is already completed; nothing to do", batch.job_id, batch.batch_id,
                 batch.batch_no)
        return BatchResult(batch.job_id, batch.batch_id, batch.batch_no, 0, 0, 0, 0, time.monotonic() - started)
    messages = attempt.messages
    try:
        details, unreadable = fetch_isolating(es, cfg, [m.message_id for m in messages])
    except Exception as exc:
        _try_fail_batch(conn, attempt, exc, cfg)
        raise
    exported_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    outcomes: list[Outcome] = []
    uploads: list[sink.Upload] = []
    for m in messages:
        if m.message_id in unreadable:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=unreadable[m.message_id]))
            continue
        d = details[m.message_id]
        if d.message is None:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=(
                f"message {m.message_id!r} is no longer in index {cfg.messages_index!r}")))
            continue
        try:
            key = sink.object_key(cfg.prefix, m.message_ts.date(), m.message_id)
            body = sink.serialise(build_document(d, job_id=batch.job_id, batch_id=batch.batch_id,
                                                 run_id=run_id, exported_at=exported_at))
        except (TypeError, ValueError) as exc:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=f"cannot serialise: {exc}"))
            continue
        uploads.append(sink.Upload(key, body, tag=m))
    if cfg.layout is Layout.NDJSON_GZIP:
        uploads = sink.bundle_ndjson(uploads, day_of=lambda m: m.message_ts.date(), prefix=cfg.prefix,
                                     job_id=batch.job_id, batch_no=batch.batch_no, attempt=attempt.token)
    else:
        uploads = [sink.Upload(u.key, u.body, tag=[u.tag]) for u in uploads]
    written = 0
    for result in sink.upload_all(s3, cfg.bucket, uploads, cfg.upload_concurrency):
        written += len(result.upload.body) if result.ok else 0
        for m in result.upload.tag:
            if result.ok:
                outcomes.append(Outcome(m.row_id, m.message_id, True, s3_key=result.upload.key))
            else:
                outcomes.append(Outcome(m.row_id, m.message_id, False, error=result.error))
    try:
        tracking.record_outcomes(conn, attempt, outcomes, policy=cfg.retry_policy())
        counts = tracking.finish_batch(conn, attempt, bytes_written=written)
    except StaleAttempt:
        conn.rollback()
        remove_superseded(conn, s3, cfg, [u.key for u in uploads if cfg.layout is Layout.NDJSON_GZIP])
        raise
    except Exception as exc:
        _try_fail_batch(conn, attempt, exc, cfg)
        raise
    remove_superseded(conn, s3, cfg, _superseded_keys(s3, cfg, batch, messages, uploads))
    failed_now = sum(1 for o in outcomes if not o.ok)
    result = BatchResult(batch.job_id, batch.batch_id, batch.batch_no, len(messages), len(outcomes) - failed_now,
                         failed_now, written, time.monotonic() - started)
    log.info("batch job=%s batch=%s no=%s attempt=%s attempted=%d completed=%d failed=%d bytes=%d seconds=%.2f "
             "(batch totals: %s)", batch.job_id, batch.batch_id, batch.batch_no, attempt.token, result.attempted,
             result.completed, result.failed, written, result.seconds, counts)
    return result


# Errors of one request that splitting the batch can isolate: the data of some message (a related
# document Python cannot handle, a request Elasticsearch refuses as too large). Unreachable nodes,
# timeouts and missing indices fail every part alike, so they fail the attempt instead.
def _isolatable(exc: Exception) -> bool:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    if isinstance(exc, ExportError | TransportError):
        return False
    if isinstance(exc, ApiError):
        return exc.meta.status in (400, 413)
    return True


def fetch_isolating(es: Any, cfg: ExportConfig, ids: list[str]) -> tuple[dict[str, source.MessageDetails],
                                                                             dict[str, str]]:
    """The details of `ids`, and for each id whose details cannot be read, why (found by halving)."""
    try:
        return source.fetch_details(es, cfg, ids), {}
    except Exception as exc:
        if not _isolatable(exc):
            raise
        if len(ids) == 1:
            return {}, {ids[0]: f"cannot read its details from Elasticsearch: {type(exc).__name__}: {exc}"}
        log.warning("details of %d messages failed (%s: %s); splitting the batch to find the cause", len(ids),
                    type(exc).__name__, exc)
    half = len(ids) // 2
    left, bad_left = fetch_isolating(es, cfg, ids[:half])
    right, bad_right = fetch_isolating(es, cfg, ids[half:])
    return {**left, **right}, {**bad_left, **bad_right}


def _superseded_keys(s3: Any, cfg: ExportConfig, batch: Batch, messages: list[TrackedMessage],
                     uploads: list[sink.Upload]) -> set[str]:
    """Objects that may now hold documents nobody refers to: where the batch's messages were before,
    and the files of this batch's earlier attempts."""
    keys = {m.s3_key for m in messages if m.s3_key}
    if cfg.layout is Layout.NDJSON_GZIP:
        for day in {m.message_ts.date() for m in messages}:
            keys.update(sink.data_keys(s3, cfg.bucket, sink.batch_key_prefix(cfg.prefix, day, batch.job_id,
                                                                             batch.batch_no)))
    return keys - {u.key for u in uploads}


def remove_superseded(conn: Any, s3: Any, cfg: ExportConfig, keys: Any) -> int:
    """Remove from each object the documents no message refers to any more (and empty objects).

    Under a per-object lock, so two batches superseding parts of one file never lose each other's
    changes. Returns how many documents were removed.
    """
    removed = 0
    for key in sorted(set(keys)):
        tracking.object_lock(conn, key)
        try:
            removed += sink.keep_only(s3, cfg.bucket, key, tracking.object_references(conn, key))
        finally:
            tracking.object_unlock(conn, key)
    if removed:
        log.info("removed %d superseded document(s)", removed)
    return removed


def _try_fail_batch(conn: Any, attempt: BatchAttempt, exc: Exception, cfg: ExportConfig) -> None:
    try:
        conn.rollback()
        tracking.fail_batch(conn, attempt, f"{type(exc).__name__}: {exc}", policy=cfg.retry_policy())
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.warning("could not mark batch %s failed", attempt.batch_id)


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
    exported_by: list[dict[str, Any]] = field(default_factory=list)
    held_by_others: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def others_still_exporting(conn: Any, job: Job) -> list[JobShare]:
    """Messages of the job's interval that other live runs claimed and are still exporting."""
    return tracking.held_by_other_jobs(conn, job)


@dataclass
class DocumentCheck:
    objects: int = 0
    documents: int = 0
    missing: int = 0
    superseded: int = 0


def check_documents(conn: Any, s3: Any, cfg: ExportConfig, days: list[date]) -> DocumentCheck:
    """Count the documents S3 holds for the days, and compare each NDJSON file with tracking: every
    completed message that names a file must be in it, and nothing else may be."""
    check = DocumentCheck()
    for day in days:
        for key in sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day)):
            check.objects += 1
            if not key.endswith(sink.NDJSON_SUFFIX):
                check.documents += 1
                continue
            ids = sink.document_ids(s3, cfg.bucket, key)
            refs = tracking.object_references(conn, key, status=Status.COMPLETED)
            check.documents += len(ids)
            check.missing += len(refs - set(ids))
            check.superseded += len(ids) - len(set(ids) & refs)
    return check


def reconcile(es: Any, conn: Any, s3: Any, cfg: ExportConfig, job: Job) -> Report:
    """Check that the run's counts add up, document by document; record the outcome, write the manifest.

    Messages another run exported count as done and are listed by job ("exported by"); the DAG
    waits for runs still exporting part of the interval before it calls this. Raises
    ReconcileError when the counts do not add up, or when messages failed, so the run is red and
    says why.
    """
    row = tracking.get_job(conn, job.job_id)
    es_count = source.count_interval(es, cfg, job.start, job.end)
    days = _days(job.start, job.end)
    if cfg.layout is Layout.NDJSON_GZIP:
        # Files of this job no message refers to: an attempt that died after uploading, or was fenced out.
        remove_superseded(conn, s3, cfg, [k for d in days for k in sink.data_keys(
            s3, cfg.bucket, sink.batch_key_prefix(cfg.prefix, d, job.job_id))])
    by_status = tracking.status_counts(conn, job.start, job.end)
    batches = tracking.batch_counts(conn, job.job_id)
    whole = (datetime.combine(days[0], datetime.min.time(), UTC),
             datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), UTC))
    docs = check_documents(conn, s3, cfg, days)
    shares = tracking.completed_by_job(conn, job.start, job.end)
    held = tracking.held_by_other_jobs(conn, job)
    report = Report(
        job_id=job.job_id, dag_id=job.dag_id, run_id=job.run_id,
        interval_start=job.start.isoformat(), interval_end=job.end.isoformat(),
        es_count=es_count, ids_found=int(row["ids_found"] or 0), tracked=sum(by_status.values()),
        completed=by_status.get(Status.COMPLETED, 0), failed=by_status.get(Status.FAILED, 0),
        pending=by_status.get(Status.PENDING, 0) + by_status.get(Status.RUNNING, 0),
        dead=by_status.get(Status.DEAD, 0),
        batches=batches["batches"], to_export=int(row["to_export"] or 0),
        exported_this_run=batches["completed"], failed_this_run=batches["failed"],
        exported_by_others=sum(s.messages for s in shares if s.job_id != job.job_id),
        objects=docs.objects, objects_expected=tracking.completed_objects(conn, *whole),
        documents=docs.documents,
        documents_expected=tracking.status_counts(conn, *whole).get(Status.COMPLETED, 0),
        documents_missing=docs.missing, documents_superseded=docs.superseded,
        bytes_written=batches["bytes_written"],
        exported_by=[{**asdict(s), "this_run": s.job_id == job.job_id} for s in shares],
        held_by_others=[asdict(s) for s in held],
    )
    report.problems = _problems(report, batches, held)
    report.failures = tracking.failures(conn, job.job_id)
    report.status = Status.COMPLETED if not (report.problems or report.failed or report.dead) else Status.FAILED
    tracking.update_job(
        conn, job.job_id, status=report.status, es_count=es_count, completed=report.exported_this_run,
        exported_by_others=report.exported_by_others, failed=report.failed, objects=docs.objects,
        finished_at=tracking.utc_naive(datetime.now(UTC)), last_error="; ".join(report.problems)[:4000] or None,
    )
    sink.put_json(s3, cfg.bucket, sink.manifest_key(cfg.prefix, job.dag_id, job.run_id), asdict(report))
    log.info("reconcile job=%s status=%s es_count=%d tracked=%d completed=%d (by other runs %d) failed=%d "
             "objects=%d documents=%d", job.job_id, report.status, es_count, report.tracked, report.completed,
             report.exported_by_others, report.failed, docs.objects, docs.documents)
    for share in shares:
        if share.job_id != job.job_id:
            log.info("reconcile job=%s: %d message(s) of the interval exported by %s", job.job_id, share.messages,
                     share.label())
    if report.problems:
        raise ReconcileError("the export does not add up: " + "; ".join(report.problems))
    if report.failed or report.dead:
        raise ReconcileError(f"{report.failed} message(s) of the interval failed to export and {report.dead} are dead "
                             "(reasons in message_tracking.last_error and the run's manifest); es_message_retry "
                             "re-exports failed ones, dead ones need revive_dead")
    return report


def dead_messages(conn: Any, job: Job) -> list[dict[str, Any]]:
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
    if r.documents != r.documents_expected:
        problems.append(f"S3 holds {r.documents} documents for the interval's day(s) but those days have "
                        f"{r.documents_expected} completed messages")
    if r.documents_missing:
        problems.append(f"{r.documents_missing} completed message(s) are missing from the object their s3_key names")
    if r.documents_superseded:
        problems.append(f"{r.documents_superseded} document(s) in S3 are superseded copies no message refers to")
    return problems


# ---------------------------------------------------------------------------- retry

def plan_retry(conn: Any, cfg: ExportConfig, job: Job, *, batch_size: int, only_job_id: int | None = None,
               start: datetime | None = None, end: datetime | None = None, revive_dead: bool = False) -> list[Batch]:
    """Batches of the failed messages whose next attempt is due (and dead ones when reviving)."""
    claimed = tracking.claim_failed(conn, job, only_job_id=only_job_id, start=start, end=end,
                                    revive_dead=revive_dead, limit=cfg.retry_max_messages)
    size = _batch_size(cfg, claimed, batch_size)
    batches = tracking.plan_batches(conn, job, batch_size=size)
    tracking.update_job(conn, job.job_id, batches=len(batches), to_export=claimed, ids_found=claimed)
    log.info("retry job=%s claimed=%d batches=%d revive_dead=%s", job.job_id, claimed, len(batches), revive_dead)
    return batches


@dataclass
class RetrySummary:
    job_id: int
    claimed: int
    completed: int
    failed: int
    dead: int
    unfinished: int
    dead_messages: list[dict[str, Any]]


def summarize_retry(conn: Any, job: Job) -> RetrySummary:
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
