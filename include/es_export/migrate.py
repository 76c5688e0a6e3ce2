"""Apply the tracking schema migrations: `python -m es_export.migrate`.

Reads MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB from the environment, so
operators can migrate before deploying a new version (the DAG also migrates before each run).
"""

from __future__ import annotations

import os
import sys

from es_export import tracking
from es_export.errors import ConfigError


def connect_from_env():
    """A DB-API connection from MYSQL_* variables, with PyMySQL (pure Python, as in Lambda)."""
    import pymysql

    missing = [n for n in ("MYSQL_HOST", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DB") if not os.environ.get(n)]
    if missing:
        raise ConfigError(f"set {', '.join(missing)} to reach the tracking database")
    return pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ.get("MYSQL_PORT", "3306")),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"],
                           database=os.environ["MYSQL_DB"], charset="utf8mb4")


def main() -> int:
    try:
        conn = connect_from_env()
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
