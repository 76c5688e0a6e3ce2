"""The tracking schema: versioned, idempotent migrations (`schema_version`)."""

from __future__ import annotations

from es_export.errors import TrackingError
from es_export.model import Status
from es_export.tracking._sql import Connection, Cursor

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "job_runs, message_tracking, batch_progress", [
        """CREATE TABLE IF NOT EXISTS job_runs (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            dag_id VARCHAR(250) NOT NULL,
            run_id VARCHAR(250) NOT NULL,
            interval_start DATETIME(6) NOT NULL,
            interval_end DATETIME(6) NOT NULL,
            next_run_date DATETIME(6) NOT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            dispatch VARCHAR(16) NOT NULL DEFAULT 'local',
            batch_size INT NOT NULL DEFAULT 500,
            reprocess BOOLEAN NOT NULL DEFAULT FALSE,
            es_count BIGINT NULL,
            ids_found BIGINT NULL,
            ids_new BIGINT NULL,
            batches INT NULL,
            to_export BIGINT NULL,
            completed BIGINT NULL,
            failed BIGINT NULL,
            objects BIGINT NULL,
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            started_at DATETIME(6) NULL,
            finished_at DATETIME(6) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_job_runs_run (dag_id, run_id),
            KEY ix_job_runs_interval (interval_start, interval_end)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS message_tracking (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            message_id VARCHAR(512) NOT NULL,
            message_ts DATETIME(6) NOT NULL,
            job_id BIGINT NULL,
            batch_id BIGINT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            s3_key VARCHAR(1024) NULL,
            exported_at DATETIME(6) NULL,
            next_attempt_at DATETIME(6) NULL,
            dag_id VARCHAR(250) NULL,
            run_id VARCHAR(250) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_message_tracking_message_id (message_id),
            KEY ix_message_tracking_ts (message_ts, status),
            KEY ix_message_tracking_job (job_id, id),
            KEY ix_message_tracking_batch (batch_id, status),
            KEY ix_message_tracking_retry (status, next_attempt_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS batch_progress (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            job_id BIGINT NOT NULL,
            batch_no INT NOT NULL,
            status VARCHAR(16) NOT NULL DEFAULT 'pending',
            total INT NOT NULL DEFAULT 0,
            completed INT NOT NULL DEFAULT 0,
            failed INT NOT NULL DEFAULT 0,
            bytes_written BIGINT NOT NULL DEFAULT 0,
            attempts INT NOT NULL DEFAULT 0,
            last_error TEXT NULL,
            started_at DATETIME(6) NULL,
            finished_at DATETIME(6) NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            UNIQUE KEY uq_batch_progress_job_batch (job_id, batch_no),
            KEY ix_batch_progress_status (job_id, status)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]),
    (2, "leases, retry schedule, extract checkpoints", [
        "ALTER TABLE message_tracking ADD COLUMN lease_expires_at DATETIME(6) NULL AFTER next_attempt_at",
        """CREATE TABLE IF NOT EXISTS extract_checkpoints (
            job_id BIGINT PRIMARY KEY,
            last_ts_ms BIGINT NOT NULL,
            ids_before BIGINT NOT NULL,
            ids_new BIGINT NOT NULL DEFAULT 0,
            finished BOOLEAN NOT NULL DEFAULT FALSE,
            resumes INT NOT NULL DEFAULT 0,
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]),
    (3, "batches dispatched to SQS", [
        "ALTER TABLE batch_progress ADD COLUMN dispatched_at DATETIME(6) NULL AFTER attempts",
    ]),
    (4, "job_runs mirrors its Airflow run", [
        "ALTER TABLE job_runs ADD COLUMN airflow_state VARCHAR(16) NULL AFTER status",
        "ALTER TABLE job_runs ADD COLUMN airflow_try INT NULL AFTER airflow_state",
        "ALTER TABLE job_runs ADD COLUMN airflow_started_at DATETIME(6) NULL AFTER airflow_try",
        "ALTER TABLE job_runs ADD COLUMN airflow_ended_at DATETIME(6) NULL AFTER airflow_started_at",
        "ALTER TABLE job_runs ADD COLUMN airflow_url VARCHAR(1024) NULL AFTER airflow_ended_at",
    ]),
    # PAD SPACE collations (every *_bin of MySQL 5.7 and MariaDB, MySQL 8's utf8mb4_bin) treat 'pad' and
    # 'pad ' as one key; ids must compare byte by byte. {nopad_bin} is chosen per server by migrate().
    (5, "byte-exact message ids, batch leases, s3_key index", [
        "ALTER TABLE message_tracking MODIFY message_id VARCHAR(512) CHARACTER SET utf8mb4"
        " COLLATE {nopad_bin} NOT NULL",
        "ALTER TABLE batch_progress ADD COLUMN lease_expires_at DATETIME(6) NULL AFTER dispatched_at",
        "ALTER TABLE message_tracking ADD KEY ix_message_tracking_s3_key (s3_key(255))",
    ]),
    (6, "which job exported which part of an interval", [
        "ALTER TABLE job_runs ADD COLUMN exported_by_others BIGINT NULL AFTER completed",
    ]),
    # Data streams, aliases and patterns: a message's details are fetched from its concrete index.
    (7, "the concrete index of each message", [
        "ALTER TABLE message_tracking ADD COLUMN source_index VARCHAR(255) NULL AFTER message_ts",
    ]),
    # One statement, so a second worker migrating at once fails whole on the duplicate column
    # (ignored) instead of dropping the new primary key.
    (8, "an extract checkpoint per time slice", [
        "ALTER TABLE extract_checkpoints ADD COLUMN slice_no INT NOT NULL DEFAULT 0 AFTER job_id,"
        " ADD COLUMN slice_start_ms BIGINT NULL AFTER slice_no,"
        " ADD COLUMN slice_end_ms BIGINT NULL AFTER slice_start_ms,"
        " DROP PRIMARY KEY, ADD PRIMARY KEY (job_id, slice_no)",
    ]),
    # object_uploads: the NDJSON files an attempt is writing, recorded before the upload and deleted in
    # the transaction that finishes the batch; a row left behind names an orphan to sweep.
    # receives: how often the batch's current queue message was received (SQS's count, not stalls).
    (9, "files being uploaded, SQS receives per dispatch", [
        """CREATE TABLE IF NOT EXISTS object_uploads (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            s3_key VARCHAR(1024) NOT NULL,
            batch_id BIGINT NOT NULL,
            attempt INT NOT NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            KEY ix_object_uploads_batch (batch_id, attempt),
            KEY ix_object_uploads_key (s3_key(255))
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        "ALTER TABLE batch_progress ADD COLUMN receives INT NOT NULL DEFAULT 0 AFTER attempts",
    ]),
    # Where a scan stands inside a group of equal timestamps: a resume continues in the same point-in-time.
    (10, "extract position inside a timestamp group", [
        "ALTER TABLE extract_checkpoints ADD COLUMN ids_at_last BIGINT NOT NULL DEFAULT 0 AFTER ids_before,"
        " ADD COLUMN pit_id TEXT NULL AFTER ids_new, ADD COLUMN search_after TEXT NULL AFTER pit_id",
    ]),
    # The job whose run failed a message first: what an alert names, and what es_message_retry's job_id takes.
    (11, "the job that first failed a message", [
        "ALTER TABLE message_tracking ADD COLUMN failed_job_id BIGINT NULL AFTER job_id,"
        " ADD KEY ix_message_tracking_failed_job (failed_job_id)",
        f"UPDATE message_tracking SET failed_job_id = job_id WHERE status IN ('{Status.FAILED}', '{Status.DEAD}')"
        " AND failed_job_id IS NULL",
    ]),
    # source_version: a digest of the source documents a message's object holds, so es_message_refresh
    # rewrites exactly the objects whose source changed. refresh_state: up to when each refresh brought
    # the archive up to date; refresh_days: when each day was last brought up to date, how many messages
    # that rewrote. refresh_recheck: messages being exported while their documents changed.
    (12, "source versions, the refresh watermark", [
        "ALTER TABLE message_tracking ADD COLUMN source_version CHAR(32) CHARACTER SET ascii NULL AFTER s3_key",
        """CREATE TABLE IF NOT EXISTS refresh_state (
            name VARCHAR(64) NOT NULL PRIMARY KEY,
            watermark DATETIME(6) NOT NULL,
            job_id BIGINT NULL,
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS refresh_days (
            day DATE NOT NULL PRIMARY KEY,
            refreshed_at DATETIME(6) NOT NULL,
            rewritten BIGINT NOT NULL,
            job_id BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS refresh_recheck (
            message_id VARCHAR(512) CHARACTER SET utf8mb4 COLLATE {nopad_bin} NOT NULL PRIMARY KEY,
            noted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]),
    # A batch's rows are found by batch_id alone (at most max_batch_size of them): with the status in
    # the index, each of a message's status changes also moved its entry there (issue 25: MariaDB CPU).
    # One statement, so running it again after it succeeded gives the same index.
    (13, "the batch index without the status", [
        "ALTER TABLE message_tracking DROP INDEX ix_message_tracking_batch,"
        " ADD KEY ix_message_tracking_batch (batch_id)",
    ]),
]


# NO PAD binary collations: MariaDB >= 10.2, MySQL >= 8.0.17.
NOPAD_BIN_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")


# MySQL error codes that mean another process applied the same statement first.
_ALREADY_APPLIED = {1050, 1060, 1061}  # table exists, duplicate column, duplicate key


def migrate(conn: Connection) -> list[int]:
    """Apply the migrations this database lacks, in order; returns the versions applied now."""
    applied_now = []
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INT PRIMARY KEY, description VARCHAR(250) NOT NULL,"
            " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.execute("SELECT version FROM schema_version")
        done = {row[0] for row in cur.fetchall()}
        names: dict[str, str] = {}
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                if "{nopad_bin}" in statement and "nopad_bin" not in names:
                    names["nopad_bin"] = _nopad_bin_collation(cur)
                try:
                    cur.execute(statement.format(**names) if "{" in statement else statement)
                except Exception as exc:
                    if not exc.args or exc.args[0] not in _ALREADY_APPLIED:
                        raise
            # INSERT IGNORE: two workers migrating at once both succeed.
            cur.execute("INSERT IGNORE INTO schema_version (version, description) VALUES (%s, %s)",
                        (version, description))
            applied_now.append(version)
    conn.commit()
    return applied_now


def _nopad_bin_collation(cur: Cursor) -> str:
    for name in NOPAD_BIN_COLLATIONS:
        cur.execute("SHOW COLLATION LIKE %s", (name,))
        if cur.fetchall():
            return name
    raise TrackingError("the tracking database has no NO PAD binary collation (utf8mb4_nopad_bin or "
                        "utf8mb4_0900_bin), so message ids differing only by trailing spaces would collide; "
                        "use MariaDB 10.2+ or MySQL 8.0.17+")


LATEST_VERSION = max(version for version, _, _ in MIGRATIONS)

_NO_SUCH_TABLE = 1146


def schema_version(conn: Connection) -> int:
    """The newest migration the database has (0 for an empty database, read without changing it)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            version = int(cur.fetchone()[0])
    except Exception as exc:
        if not exc.args or exc.args[0] != _NO_SUCH_TABLE:
            raise
        version = 0
    conn.commit()
    return version
