"""Housekeeping: message_tracking keeps completed rows for `tracking_retention_days` days only."""

from __future__ import annotations

import logging
import time

from es_export import tracking
from es_export.config import ExportConfig
from es_export.tracking import Connection

log = logging.getLogger(__name__)

# Rows one purge deletes at most. The first purge of a table that never had retention (a year of
# rows) is spread over several runs of es_message_retry, each well inside its task's timeout.
PURGE_ROWS_PER_RUN = 2_000_000


def purge_tracking(conn: Connection, cfg: ExportConfig, *, max_rows: int = PURGE_ROWS_PER_RUN) -> int:
    """Delete completed tracking rows older than cfg.tracking_retention_days (0 or None: none);
    returns how many went. See tracking.purge_completed for which rows go."""
    days = cfg.tracking_retention_days
    if not days:
        log.info("tracking retention is off (tracking_retention_days=%r): nothing purged", days)
        return 0
    started = time.monotonic()
    purged = tracking.purge_completed(conn, days, max_rows=max_rows)
    more = " (the limit of one run; the next run carries on)" if purged >= max_rows else ""
    log.info("purged %d completed tracking row(s) older than %d days in %.1fs%s", purged, days,
             time.monotonic() - started, more)
    return purged
