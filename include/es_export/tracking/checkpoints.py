"""Extract checkpoints: how far an extract got, committed with the ids it covers."""

from __future__ import annotations

from typing import Any

from es_export.model import Checkpoint


def load_checkpoint(conn: Any, job_id: int) -> Checkpoint | None:
    with conn.cursor() as cur:
        cur.execute("SELECT last_ts_ms, ids_before, ids_new, finished FROM extract_checkpoints WHERE job_id = %s",
                    (job_id,))
        row = cur.fetchone()
    conn.commit()
    return Checkpoint(int(row[0]), int(row[1]), int(row[2]), bool(row[3])) if row else None


def save_checkpoint(conn: Any, job_id: int, cp: Checkpoint, *, resumed: bool = False) -> None:
    """Upsert without commit: the caller commits it together with the ids it covers."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO extract_checkpoints (job_id, last_ts_ms, ids_before, ids_new, finished, resumes)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE last_ts_ms = VALUES(last_ts_ms),"
            " ids_before = VALUES(ids_before), ids_new = VALUES(ids_new), finished = VALUES(finished),"
            " resumes = resumes + VALUES(resumes)",
            (job_id, cp.last_ts_ms, cp.ids_before, cp.ids_new, cp.finished, 1 if resumed else 0),
        )
