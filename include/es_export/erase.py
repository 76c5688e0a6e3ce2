"""Remove messages from the archive for good (an erasure request): `python -m es_export.erase ID [ID ...]`.

Each message's document is removed from every object of its day (the live one and any older copy), then
its tracking row is deleted. Delete the messages from the cluster first, or the next export or refresh
of their day puts them back. Settings come from the environment, as for the processing Lambda:
EXPORT_CONFIG (a JSON object of configuration keys: bucket, prefix, ...), MYSQL_HOST, MYSQL_PORT,
MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB, and the AWS credentials of the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date

from es_export import clients, pipeline
from es_export.config import ExportConfig
from es_export.errors import ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m es_export.erase", description=__doc__.splitlines()[0])
    parser.add_argument("message_ids", nargs="+", metavar="ID", help="message id (exactly, spaces included)")
    parser.add_argument("--day", type=date.fromisoformat, help="the messages' UTC day, when retention purged "
                                                                 "their tracking rows (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    try:
        cfg = ExportConfig.from_mapping(json.loads(os.environ.get("EXPORT_CONFIG") or "{}"))
        conn = clients.mysql(clients.MySQLSettings.from_env())
    except (ExportError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s3 = clients.s3(cfg.upload_concurrency, expected_bucket_owner=cfg.expected_bucket_owner)
    failed = 0
    try:
        for message_id in args.message_ids:
            try:
                keys = pipeline.erase(conn, s3, cfg, message_id, args.day)
                print(f"erased {message_id!r}: removed from {len(keys)} object(s), tracking row deleted")
            except ExportError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
    finally:
        conn.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
