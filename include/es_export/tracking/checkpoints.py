"""Extract checkpoints: how far each slice of an extract got, committed with the ids it covers."""

from __future__ import annotations

import json

from es_export.model import Checkpoint, ExtractSlice
from es_export.tracking._sql import Connection


def load_checkpoint(conn: Connection, job_id: int, part: ExtractSlice | None = None) -> Checkpoint | None:
    """The checkpoint of a slice (slice 0 when none is given); None when it has none, or when the
    saved one belongs to another cut of the interval (an earlier attempt with another slice count)."""
    with conn.cursor() as cur:
        cur.execute("SELECT last_ts_ms, ids_before, ids_new, finished, slice_start_ms, slice_end_ms, ids_at_last,"
                    " pit_id, search_after FROM extract_checkpoints WHERE job_id = %s AND slice_no = %s",
                    (job_id, part.no if part else 0))
        row = cur.fetchone()
    conn.commit()
    if row is None or (part is not None and not part.matches(row[4], row[5], int(row[0]))):
        return None
    return Checkpoint(int(row[0]), int(row[1]), int(row[2]), bool(row[3]), int(row[6]), row[7] or None,
                      json.loads(row[8]) if row[8] else None)


def save_checkpoint(conn: Connection, job_id: int, cp: Checkpoint, *, part: ExtractSlice | None = None,
                    resumed: bool = False) -> None:
    """Upsert without commit: the caller commits it together with the ids it covers."""
    bounds = (part.no, part.start_ms, part.end_ms) if part else (0, None, None)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO extract_checkpoints (job_id, slice_no, slice_start_ms, slice_end_ms, last_ts_ms, ids_before,"
            " ids_at_last, ids_new, pit_id, search_after, finished, resumes)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON DUPLICATE KEY UPDATE slice_start_ms = VALUES(slice_start_ms), slice_end_ms = VALUES(slice_end_ms),"
            " last_ts_ms = VALUES(last_ts_ms), ids_before = VALUES(ids_before), ids_at_last = VALUES(ids_at_last),"
            " ids_new = VALUES(ids_new), pit_id = VALUES(pit_id), search_after = VALUES(search_after),"
            " finished = VALUES(finished), resumes = resumes + VALUES(resumes)",
            (job_id, *bounds, cp.last_ts_ms, cp.ids_before, cp.at_last, cp.ids_new, cp.pit_id,
             None if cp.search_after is None else json.dumps(cp.search_after), cp.finished, 1 if resumed else 0),
        )


def slice_checkpoints(conn: Connection, job_id: int, parts: list[ExtractSlice]) -> dict[int, Checkpoint]:
    """The checkpoints of `parts` that belong to this cut of the interval, by slice number."""
    with conn.cursor() as cur:
        cur.execute("SELECT slice_no, last_ts_ms, ids_before, ids_new, finished, slice_start_ms, slice_end_ms"
                    " FROM extract_checkpoints WHERE job_id = %s", (job_id,))
        rows = cur.fetchall()
    conn.commit()
    by_no = {part.no: part for part in parts}
    return {int(r[0]): Checkpoint(int(r[1]), int(r[2]), int(r[3]), bool(r[4])) for r in rows
            if int(r[0]) in by_no and by_no[int(r[0])].matches(r[5], r[6], int(r[1]))}
