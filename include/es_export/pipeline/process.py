"""Process: export one batch, every message ending completed or failed with its reason."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from es_export import parquet, search, sink, source, tracking
from es_export.config import ExportConfig, Layout
from es_export.errors import ExportError, StaleAttempt
from es_export.model import Batch, BatchAttempt, Outcome, TrackedMessage
from es_export.pipeline import archive
from es_export.search import Searchable
from es_export.sink import S3Client
from es_export.tracking import Connection

log = logging.getLogger(__name__)


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


def process_batch(es: Searchable, conn: Connection, s3: S3Client, cfg: ExportConfig, batch: Batch, *, run_id: str,
                  lease_seconds: int | None = None) -> BatchResult:
    """Export one batch; every message ends completed or failed with its reason.

    A message whose details cannot be read (bad related documents) is found by splitting the batch
    and fails alone. The whole attempt fails only when it cannot proceed at all (Elasticsearch or
    MySQL unreachable, an index missing): each of its messages then spends an attempt, and the
    caller's retry runs it again, skipping what was done. Every write is fenced by the attempt's
    token, so a stale attempt (a Lambda re-invoked, a queue delivering twice) changes nothing.
    """
    started = time.monotonic()
    attempt = tracking.start_batch(conn, batch.batch_id, lease_seconds=lease_seconds or cfg.lease_seconds,
                                   expect=batch)
    if attempt.already_completed:
        log.info("batch job=%s batch=%s no=%s is already completed; nothing to do", attempt.job_id, batch.batch_id,
                 attempt.batch_no)
        return BatchResult(attempt.job_id, batch.batch_id, attempt.batch_no, 0, 0, 0, 0, time.monotonic() - started)
    messages = attempt.messages
    try:
        details, unreadable = fetch_isolating(es, cfg, [m.message_id for m in messages],
                                              {m.message_id: m.index for m in messages})
        outcomes, uploads = _documents(cfg, attempt, details, unreadable, run_id=run_id)
        if cfg.layout.bundled:  # a file it never records is an orphan that archive sweeps
            tracking.note_uploads(conn, attempt, [u.key for u in uploads])
    except StaleAttempt:
        conn.rollback()
        raise
    except Exception as exc:
        _try_fail_batch(conn, attempt, exc, cfg)
        raise
    written = _upload(s3, cfg, uploads, outcomes, {mid: source.version_of(d) for mid, d in details.items()})
    try:
        tracking.record_outcomes(conn, attempt, outcomes, policy=cfg.retry_policy())
        counts = tracking.finish_batch(conn, attempt, bytes_written=written)
    except StaleAttempt:
        conn.rollback()
        archive.prune(conn, s3, cfg, [u.key for u in uploads if cfg.layout.bundled])
        raise
    except Exception as exc:
        _try_fail_batch(conn, attempt, exc, cfg)
        raise
    # Where the batch's messages were before, and files of this batch's attempts that never recorded.
    archive.prune(conn, s3, cfg, {m.s3_key for m in messages if m.s3_key} - {u.key for u in uploads})
    archive.sweep_orphans(conn, s3, cfg, batch_id=batch.batch_id)
    failed_now = sum(1 for o in outcomes if not o.ok)
    result = BatchResult(attempt.job_id, batch.batch_id, attempt.batch_no, len(messages),
                         len(outcomes) - failed_now, failed_now, written, time.monotonic() - started)
    log.info("batch job=%s batch=%s no=%s attempt=%s attempted=%d completed=%d failed=%d bytes=%d seconds=%.2f "
             "(batch totals: %s)", attempt.job_id, batch.batch_id, attempt.batch_no, attempt.token, result.attempted,
             result.completed, result.failed, written, result.seconds, counts)
    return result


def _documents(cfg: ExportConfig, attempt: BatchAttempt, details: dict[str, source.MessageDetails],
               unreadable: dict[str, str], *,
               run_id: str) -> tuple[list[Outcome], list[sink.Upload[list[TrackedMessage]]]]:
    """The objects to upload (tagged with their messages), and the outcomes of messages that cannot be."""
    exported_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    outcomes: list[Outcome] = []
    uploads: list[sink.Upload[TrackedMessage]] = []  # one document each, tagged with its message
    per_message, as_rows = cfg.layout is Layout.PER_MESSAGE, cfg.layout is Layout.PARQUET
    for m in attempt.messages:
        if m.message_id in unreadable:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=unreadable[m.message_id]))
            continue
        d = details[m.message_id]
        if d.message is None:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=(
                f"message {m.message_id!r} is no longer in index {cfg.messages_index!r}")))
            continue
        try:
            # NDJSON and Parquet files are named by batch and day, so only per-message objects need the id's key.
            key = sink.object_key(cfg.prefix, m.message_ts.date(), m.message_id) if per_message else ""
            document = build_document(d, job_id=attempt.job_id, batch_id=attempt.batch_id, run_id=run_id,
                                      exported_at=exported_at)
            upload = (sink.Upload(key, b"", tag=m, row=parquet.row(document, m.message_ts)) if as_rows
                      else sink.Upload(key, sink.serialise(document), tag=m))
        except (TypeError, ValueError) as exc:
            outcomes.append(Outcome(m.row_id, m.message_id, False, error=f"cannot serialise: {exc}"))
            continue
        uploads.append(upload)
    if cfg.layout is Layout.NDJSON_GZIP:
        return outcomes, sink.bundle_ndjson(uploads, day_of=lambda m: m.message_ts.date(), prefix=cfg.prefix,
                                            job_id=attempt.job_id, batch_no=attempt.batch_no, attempt=attempt.token)
    if cfg.layout is Layout.PARQUET:
        return outcomes, sink.bundle_parquet(uploads, day_of=lambda m: m.message_ts.date(), prefix=cfg.prefix,
                                             job_id=attempt.job_id, batch_no=attempt.batch_no, attempt=attempt.token)
    return outcomes, [sink.Upload(u.key, u.body, tag=[u.tag]) for u in uploads]


def _upload(s3: S3Client, cfg: ExportConfig, uploads: list[sink.Upload[list[TrackedMessage]]],
            outcomes: list[Outcome], versions: dict[str, str]) -> int:
    """PUT every object; each of its messages gets an outcome, with the version of the source it holds.
    Returns the bytes written."""
    written = 0
    for uploaded in sink.upload_all(s3, cfg.bucket, uploads, cfg.upload_concurrency,
                                   sse_kms_key_id=cfg.sse_kms_key_id):
        written += len(uploaded.upload.body) if uploaded.ok else 0
        for m in uploaded.upload.tag:
            if uploaded.ok:
                outcomes.append(Outcome(m.row_id, m.message_id, True, s3_key=uploaded.upload.key,
                                        source_version=versions.get(m.message_id)))
            else:
                outcomes.append(Outcome(m.row_id, m.message_id, False, error=uploaded.error))
    return written


# Errors of one request that splitting the batch can isolate: the data of some message (a related
# document Python cannot handle, a request the engine refuses as bad or too large). Unreachable
# nodes, timeouts, 5xx, IAM refusals and missing indices fail every part alike, on Elasticsearch and
# OpenSearch, so they fail the attempt instead of spending an attempt of every message.
def _isolatable(exc: Exception) -> bool:
    if isinstance(exc, ExportError) or search.unavailable(exc):
        return False
    status = getattr(getattr(exc, "meta", None), "status", None) or getattr(exc, "status_code", None)
    return status in (400, 413) if isinstance(status, int) else True


def fetch_isolating(es: Searchable, cfg: ExportConfig, ids: list[str], indices: dict[str, str | None] | None = None
                    ) -> tuple[dict[str, source.MessageDetails], dict[str, str]]:
    """The details of `ids`, and for each id whose details cannot be read, why (found by halving)."""
    try:
        return source.fetch_details(es, cfg, ids, indices), {}
    except Exception as exc:
        if not _isolatable(exc):
            raise
        if len(ids) == 1:
            return {}, {ids[0]: f"cannot read its details from Elasticsearch: {type(exc).__name__}: {exc}"}
        log.warning("details of %d messages failed (%s: %s); splitting the batch to find the cause", len(ids),
                    type(exc).__name__, exc)
    half = len(ids) // 2
    left, bad_left = fetch_isolating(es, cfg, ids[:half], indices)
    right, bad_right = fetch_isolating(es, cfg, ids[half:], indices)
    return {**left, **right}, {**bad_left, **bad_right}


def _try_fail_batch(conn: Connection, attempt: BatchAttempt, exc: Exception, cfg: ExportConfig) -> None:
    try:
        conn.rollback()
        tracking.fail_batch(conn, attempt, f"{type(exc).__name__}: {exc}", policy=cfg.retry_policy())
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.warning("could not mark batch %s failed", attempt.batch_id)
