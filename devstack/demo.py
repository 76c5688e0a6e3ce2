"""`make demo`: seed the local stack if needed, export one day with `airflow dags test`, summarise.

Run with the stack's settings loaded (the Makefile does that). Running it again exports nothing
new, and the summary says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import seed_data

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ensure_seeded(client, url: str, cfg: seed_data.SeedConfig) -> None:
    expected = cfg.messages
    index = seed_data.MESSAGES_INDEX
    if client.exists(index) and client.count(index, {"match_all": {}}) == expected:
        print(f"sample data: {expected} messages already in {client.engine}")
        return
    written = seed_data.load_over_http(url, cfg, recreate=True)
    print(f"sample data: seeded {cfg.messages} messages ({written} documents) from {cfg.start} into {client.engine}")


def run_export(day: date, reprocess: bool) -> tuple[int, float]:
    conf = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat(), "reprocess": reprocess}
    started = time.monotonic()
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    # `airflow dags test` cannot run a DAG with a deadline in Airflow 3.3.1: switch the alert off here.
    env = {**os.environ, "ES_EXPORT_DEADLINE_SECONDS": "off"}
    out = subprocess.run([str(BIN / "airflow"), "dags", "test", "es_message_export", "-c", json.dumps(conf)],
                         capture_output=True, text=True, env=env)
    log = ROOT / ".local" / "logs" / "demo-dags-test.log"
    log.write_text(out.stdout + out.stderr)
    print(f"airflow dags test es_message_export: exit {out.returncode} (full log: {log})")
    return out.returncode, time.monotonic() - started


def exported_before(conn, day: date) -> int:
    import MySQLdb

    with conn.cursor() as cur:
        try:
            cur.execute("SELECT COUNT(*) FROM message_tracking WHERE status = 'completed' AND message_ts >= %s"
                        " AND message_ts < %s", (day, day + timedelta(days=1)))
        except MySQLdb.ProgrammingError:
            return 0  # no tracking tables yet
        return int(cur.fetchone()[0])


def latest_job(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM job_runs WHERE dag_id = 'es_message_export' ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=date.fromisoformat, default=date(2024, 10, 1))
    args = parser.parse_args()

    import boto3

    from es_export import clients, search, sink
    from es_export.config import ExportConfig

    cfg = ExportConfig()
    client = search.connect(search.SearchSettings(url=os.environ["ES_URL"]))
    ensure_seeded(client, os.environ["ES_URL"], seed_data.SeedConfig())
    conn = clients.mysql(clients.MySQLSettings.from_env(), driver="mysqldb")
    conn.autocommit(True)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    if cfg.bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=cfg.bucket)
    # The local S3 server keeps nothing across restarts (`make up` creates the bucket again, empty), but
    # MariaDB does: what tracking says was exported is gone, and reconcile would rightly fail. Export it again.
    reprocess = False
    exported = exported_before(conn, args.day)
    if exported and not sink.count_objects(s3, cfg.bucket, sink.day_prefix(cfg.prefix, args.day)):
        print(f"the local S3 server restarted empty, but tracking lists {exported} message(s) of {args.day} "
              "as exported: this run exports them again (reprocess=true)")
        reprocess = True

    code, elapsed = run_export(args.day, reprocess)

    job = latest_job(conn)
    objects = sink.count_objects(s3, cfg.bucket, sink.day_prefix(cfg.prefix, args.day))
    es_count = client.count(cfg.messages_index, {"range": {"timestamp": {
        "gte": args.day.isoformat(), "lt": (args.day + timedelta(days=1)).isoformat()}}})
    exported = int(job.get("completed") or 0)
    print()
    print(f"Export of {args.day} ({job.get('run_id')}): {job.get('status')}")
    print(f"  messages found in the source    : {job.get('ids_found')} (independent count: {es_count})")
    print(f"  exported by this run            : {exported}")
    print(f"  already exported, skipped       : {int(job.get('ids_found') or 0) - int(job.get('to_export') or 0)}")
    print(f"  failed                          : {job.get('failed')}")
    print(f"  objects under the day's prefix  : {objects} (listed on S3)")
    print(f"  elapsed                         : {elapsed:.1f}s")
    if exported == 0 and code == 0:
        print("  Nothing was re-exported: every message of the day was already exported. "
              "Trigger with reprocess=true to export them again.")
    manifest = sink.manifest_key(cfg.prefix, "es_message_export", str(job.get("run_id")))
    print("Where to look:")
    print(f"  objects  : s3://{cfg.bucket}/{sink.day_prefix(cfg.prefix, args.day)} ({os.environ['AWS_ENDPOINT_URL']})")
    print(f"  manifest : s3://{cfg.bucket}/{manifest}")
    print(f"  tracking : MySQL {os.environ['MYSQL_HOST']}:{os.environ['MYSQL_PORT']}/{os.environ['MYSQL_DB']}, "
          f"tables job_runs (id {job.get('id')}), batch_progress, message_tracking")
    return code


if __name__ == "__main__":
    sys.exit(main())
