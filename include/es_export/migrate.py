"""Apply the tracking schema migrations: `python -m es_export.migrate`.

Reads MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB from the environment, so
operators can migrate before deploying a new version (the DAG also migrates before each run).
"""

from __future__ import annotations

import sys

from es_export import clients, tracking
from es_export.errors import ConfigError


def main() -> int:
    try:
        conn = clients.mysql(clients.MySQLSettings.from_env())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        applied = tracking.migrate(conn)
        version = tracking.schema_version(conn)
    finally:
        conn.close()
    print(f"tracking schema at version {version}" + (f" (applied now: {applied})" if applied else " (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
