"""Which documents of a day are live: the one place that decides what may be removed from S3 and what
reconcile compares. Process, reconcile and es_message_retry all call it.

A message's live document is the one its completed tracking row names (s3_key). Any other document
under a day is one of:
  - an older copy in a recorded object: removed only once the message is completed and its row names
    another object. A pending, running, failed or dead message keeps every copy it has, and a
    document whose message has no row (retention removed it) is its only copy;
  - part of an orphan: a file an attempt uploaded and never recorded (object_uploads still names it
    after the attempt ended: it died, was fenced out or failed). Its documents were never anyone's
    recorded copy, so every one that no completed row names is removed;
  - part of a file an attempt is still writing: not touched, and not counted.
Files are rewritten under a per-object lock, so two workers never lose each other's changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice

from es_export import sink, tracking
from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export.model import Status
from es_export.sink import S3Client
from es_export.tracking import Connection

log = logging.getLogger(__name__)

# How many missing or stray keys a report names (the counts are always complete).
EXAMPLES = 20


def prune(conn: Connection, s3: S3Client, cfg: ExportConfig, keys: Iterable[str]) -> int:
    """Remove from each object the documents that are no longer live (see the module's rules).

    Returns how many documents were removed. A file still being written is left as it is.
    """
    removed = 0
    for key in sorted(set(keys)):
        removed += _prune_one(conn, s3, cfg, key)[1]
    if removed:
        log.info("removed %d superseded or orphaned document(s)", removed)
    return removed


def sweep_orphans(conn: Connection, s3: S3Client, cfg: ExportConfig, *, batch_id: int | None = None,
                  limit: int = 1000) -> int:
    """Prune the files attempts uploaded and will never record (of one batch, or all of them).

    An attempt whose lease ran out is first failed as stalled, which fences it: it can no longer
    record its file, so the file is an orphan (its messages spent an attempt, as for any stall).
    """
    for stalled in tracking.stalled_upload_batches(conn, batch_id=batch_id):
        tracking.expire_stalled_batch(conn, stalled, policy=cfg.retry_policy())
    return prune(conn, s3, cfg, tracking.orphan_uploads(conn, batch_id=batch_id, limit=limit))


def _prune_one(conn: Connection, s3: S3Client, cfg: ExportConfig, key: str) -> tuple[list[str] | None, int]:
    """(ids left in the object, None while it is still being written; documents removed)."""
    tracking.object_lock(conn, key)
    try:
        state = tracking.upload_state(conn, key)
        if state == "writing":
            return None, 0
        if state == "orphan":
            def removable(ids: list[str]) -> set[str]:
                return set(ids) - tracking.object_references(conn, key, status=Status.COMPLETED)
        else:
            def removable(ids: list[str]) -> set[str]:
                return tracking.completed_elsewhere(conn, key, ids)
        before: list[str] = []

        def counting(ids: list[str]) -> set[str]:
            before.extend(ids)
            return removable(ids)

        left = sink.remove_documents(s3, cfg.bucket, key, counting, sse_kms_key_id=cfg.sse_kms_key_id)
        if state == "orphan":
            tracking.forget_upload(conn, key)
        return left, len(before) - len(left)
    finally:
        tracking.object_unlock(conn, key)


def erase(conn: Connection, s3: S3Client, cfg: ExportConfig, message_id: str, day: date | None = None) -> list[str]:
    """Remove a message from the archive for good (an erasure request): its document from every object of
    its day (the live one and any older copy), then its tracking row. Returns the keys that held it.

    The day comes from its tracking row, or `day` when retention purged the row. A message a live run
    holds is refused (ConfigError): erase it once that run ended. Delete it from the cluster first, or
    the next export or refresh of its day puts it back.
    """
    row = tracking.erasable(conn, message_id)
    if row is None and day is None:
        raise ConfigError(f"message {message_id!r} has no tracking row (never exported, or purged by retention); "
                          "give its day (UTC) to find its documents")
    day = row.message_ts.date() if row else day
    assert day is not None
    keys = sorted({sink.object_key(cfg.prefix, day, message_id)}
                  | set(sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day) + "batch-")))
    held = [key for key in keys if _remove_message(conn, s3, cfg, key, message_id)]
    tracking.forget_message(conn, message_id)
    log.info("erased message %r: removed from %d object(s) %s, its tracking row deleted", message_id, len(held),
             held[:5])
    return held


def _remove_message(conn: Connection, s3: S3Client, cfg: ExportConfig, key: str, message_id: str) -> bool:
    """Remove one message's document from one object, under its lock; whether the object held it."""
    seen: list[str] = []

    def removable(ids: list[str]) -> set[str]:
        seen.extend(i for i in ids if i == message_id)
        return set(seen)

    tracking.object_lock(conn, key)
    try:
        sink.remove_documents(s3, cfg.bucket, key, removable, sse_kms_key_id=cfg.sse_kms_key_id)
    finally:
        tracking.object_unlock(conn, key)
    return bool(seen)


@dataclass
class DayAudit:
    """What S3 holds for some days against what the completed rows say, after pruning."""

    objects: int = 0
    objects_expected: int = 0
    documents: int = 0
    missing: int = 0  # completed messages whose document is not in the object their row names
    superseded: int = 0  # documents left that no completed row names (a failed message's copy, no row)
    removed: int = 0
    missing_objects: list[str] = field(default_factory=list)  # examples, at most EXAMPLES
    stray_objects: list[str] = field(default_factory=list)  # examples: objects no completed row names


def audit_days(conn: Connection, s3: S3Client, cfg: ExportConfig, days: list[date]) -> DayAudit:
    """Prune every data object of the days, then compare the keys and documents with the completed rows.

    Keys are compared as sets, page by page (each page of the listing against the rows that name
    its keys), so one missing object and one stray one never cancel out, whatever the layout.
    """
    audit = DayAudit()
    for day in days:
        start = datetime.combine(day, time.min, UTC)
        expected = tracking.completed_objects(conn, start, start + timedelta(days=1))
        audit.objects_expected += expected
        matched = 0
        pages = sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day))
        while page := list(islice(pages, 1000)):
            matched += _audit_page(conn, s3, cfg, page, audit)
        if matched < expected:
            audit.missing_objects += _missing_keys(conn, s3, cfg, day, EXAMPLES - len(audit.missing_objects))
    return audit


def _audit_page(conn: Connection, s3: S3Client, cfg: ExportConfig, keys: list[str], audit: DayAudit) -> int:
    """Prune and count one page of keys; returns how many of them completed rows name."""
    named = tracking.completed_keys(conn, keys)
    for key in keys:
        if sink.is_bundle(key) or key not in named:
            left, removed = _prune_one(conn, s3, cfg, key)
            audit.removed += removed
            if left is None:  # still being written: neither counted nor compared
                named.discard(key)
                continue
            if not left:
                named.discard(key)
                continue  # it held only superseded documents and is gone
            refs = tracking.object_references(conn, key, status=Status.COMPLETED)
        else:
            left, refs = ["?"], {"?"}  # a per-message object a completed row names: its one document is live
        audit.objects += 1
        audit.documents += len(left)
        audit.missing += len(refs - set(left))
        audit.superseded += len(left) - len(set(left) & refs)
        if key not in named and len(audit.stray_objects) < EXAMPLES:
            audit.stray_objects.append(key)
    return len(named)


def _missing_keys(conn: Connection, s3: S3Client, cfg: ExportConfig, day: date, limit: int) -> list[str]:
    """Up to `limit` keys that completed rows of the day name and S3 does not hold (a second listing:
    only a day that is already short pays for it)."""
    if limit <= 0:
        return []
    listed = set(sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, day)))
    start = datetime.combine(day, time.min, UTC)
    missing: list[str] = []
    for key in tracking.completed_object_keys(conn, start, start + timedelta(days=1)):
        if key not in listed and key not in missing:
            missing.append(key)
            if len(missing) == limit:
                break
    return missing
