"""S3 objects as tracking sees them: which messages an object holds, and a lock per object."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from es_export.errors import TrackingError
from es_export.tracking._sql import chunks


def object_references(conn: Any, s3_key: str, *, status: str | None = None) -> set[str]:
    """The ids of the messages whose current document is in the object `s3_key` (of one status)."""
    with conn.cursor() as cur:
        if status is None:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s", (s3_key,))
        else:
            cur.execute("SELECT message_id FROM message_tracking WHERE s3_key = %s AND status = %s", (s3_key, status))
        ids = {r[0] for r in cur.fetchall()}
    conn.commit()
    return ids


def untracked(conn: Any, message_ids: Iterable[str]) -> set[str]:
    """The ids among `message_ids` that have no message_tracking row (retention removed it)."""
    wanted = set(message_ids)
    found: set[str] = set()
    with conn.cursor() as cur:
        for chunk in chunks(sorted(wanted), 1000):
            cur.execute("SELECT message_id FROM message_tracking WHERE message_id IN ("
                        + ", ".join(["%s"] * len(chunk)) + ")", chunk)
            found.update(r[0] for r in cur.fetchall())
    conn.commit()
    return wanted - found


def object_lock(conn: Any, s3_key: str, timeout: int = 60) -> None:
    """Serialise rewrites of one S3 object across workers (a MySQL named lock, held per connection)."""
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout))
        if cur.fetchone()[0] != 1:
            raise TrackingError(f"could not lock S3 object {s3_key!r} within {timeout}s; another worker holds it")


def object_unlock(conn: Any, s3_key: str) -> None:
    name = "es_export:" + hashlib.sha1(s3_key.encode("utf-8")).hexdigest()
    with conn.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cur.fetchall()
