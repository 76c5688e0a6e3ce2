"""S3 objects as tracking sees them: which messages an object holds for good, which files are still being
written (object_uploads), and a lock per object. The rules built on these are es_export.pipeline.archive's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from es_export.errors import TrackingError
from es_export.model import Status
from es_export.tracking._sql import Connection, chunks


def object_references(conn: Connection, s3_key: str, *, status: str | None = None) -> set[str]:
    """The ids of the messages whose current document is in the object `s3_key` (of one status)."""
    with conn.cursor() as cur:
        if status is None:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s", (s3_key,))
        else:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s AND status = %s", (s3_key, status))
        ids = {r[0] for r in cur.fetchall()}
    conn.commit()
    return ids


def completed_elsewhere(conn: Connection, s3_key: str, message_ids: Iterable[str]) -> set[str]:
    """The ids among `message_ids` whose message is completed with its document in another object.

    Only these documents of `s3_key` are superseded: a message that is pending, running, failed or
    dead keeps every copy it has, and one with no row (retention removed it) keeps its only copy.
    """
    found: set[str] = set()
    with conn.cursor() as cur:
        for chunk in chunks(sorted(set(message_ids)), 1000):
            cur.execute("SELECT message_id FROM message_tracking WHERE status = %s AND s3_key IS NOT NULL"
                        " AND s3_key <> %s AND message_id IN (" + ", ".join(["%s"] * len(chunk)) + ")",
                        [Status.COMPLETED, s3_key, *chunk])
            found.update(r[0] for r in cur.fetchall())
    conn.commit()
    return found


def completed_keys(conn: Connection, keys: list[str]) -> set[str]:
    """The keys among `keys` that hold the document of at least one completed message."""
    found: set[str] = set()
    with conn.cursor() as cur:
        for chunk in chunks(keys, 1000):
            cur.execute("SELECT DISTINCT s3_key FROM message_tracking WHERE status = %s AND s3_key IN ("
                        + ", ".join(["%s"] * len(chunk)) + ")", [Status.COMPLETED, *chunk])
            found.update(r[0] for r in cur.fetchall())
    conn.commit()
    return found


# An upload row whose attempt is no longer its batch's running one: the attempt died, was fenced out,
# failed, or its batch was replaced. Only that attempt could have recorded the file, and it never will.
_ENDED = ("NOT EXISTS (SELECT 1 FROM batch_progress b WHERE b.id = u.batch_id AND b.attempts = u.attempt"
          f" AND b.status = '{Status.RUNNING}')")


def upload_state(conn: Connection, s3_key: str) -> str | None:
    """'writing' while the attempt that uploads the file may still record it, 'orphan' once it cannot,
    None for a file no attempt is writing (recorded, or older than object_uploads)."""
    with conn.cursor() as cur:
        cur.execute("SELECT " + _ENDED + " FROM object_uploads u WHERE u.s3_key = %s", (s3_key,))
        ended = [bool(r[0]) for r in cur.fetchall()]
    conn.commit()
    if not ended:
        return None
    return "orphan" if all(ended) else "writing"


def orphan_uploads(conn: Connection, *, batch_id: int | None = None, limit: int = 1000) -> list[str]:
    """Files that attempts uploaded and will never record (of one batch, or of all), oldest first."""
    where, params = _ENDED, []
    if batch_id is not None:
        where, params = "u.batch_id = %s AND " + _ENDED, [batch_id]
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT u.s3_key FROM object_uploads u WHERE " + where + " ORDER BY u.s3_key LIMIT %s",
                    [*params, limit])
        keys = [r[0] for r in cur.fetchall()]
    conn.commit()
    return keys


def stalled_upload_batches(conn: Connection, *, batch_id: int | None = None) -> list[int]:
    """Batches whose running attempt is uploading files and whose lease ran out (by the database's clock)."""
    where, params = "", []
    if batch_id is not None:
        where, params = " AND u.batch_id = %s", [batch_id]
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT b.id FROM object_uploads u JOIN batch_progress b ON b.id = u.batch_id"
                    " AND b.attempts = u.attempt WHERE b.status = %s AND b.lease_expires_at < UTC_TIMESTAMP(6)"
                    + where, [Status.RUNNING, *params])
        found = [int(r[0]) for r in cur.fetchall()]
    conn.commit()
    return found


def forget_upload(conn: Connection, s3_key: str) -> None:
    """The orphan was swept: what is left of it is what completed rows name."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM object_uploads WHERE s3_key = %s", (s3_key,))
    conn.commit()


def object_lock(conn: Connection, s3_key: str, timeout: int = 60) -> None:
    """Serialise rewrites of one S3 object across workers (a MySQL named lock, held per connection)."""
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout))
        if cur.fetchone()[0] != 1:
            raise TrackingError(f"could not lock S3 object {s3_key!r} within {timeout}s; another worker holds it")


def object_unlock(conn: Connection, s3_key: str) -> None:
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cur.fetchall()
