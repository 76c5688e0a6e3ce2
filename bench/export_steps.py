"""Measure the export's steps on the local stack: throughput and peak memory of extract and process.

    PYTHONPATH=include:devstack python bench/export_steps.py --messages 100000

Seeds N messages on one day into indices of their own (kept between runs with the same N), then
runs each step in a fresh child process (so its peak RSS is its own) with the same core functions
the DAG's tasks call, against a tracking database of its own. Prints one line per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

DAY = date(2024, 10, 1)
DB = "tracking_test_bench"


def index_names(n: int) -> dict[str, str]:
    import seed_data

    return {name: f"bench-{n}-{name}" for name in seed_data.MAPPINGS}


def export_config(n: int):
    from es_export.config import ExportConfig

    names = index_names(n)
    return ExportConfig(messages_index=names["messages"], history_index=names["message_history"],
                        status_index=names["message_status"], audit_index=names["message_audit"],
                        bucket=f"bench-{n}")


def clients():
    import boto3
    from elasticsearch import Elasticsearch

    from es_export.migrate import connect_from_env

    os.environ["MYSQL_DB"] = DB
    return (Elasticsearch(os.environ["ES_URL"], request_timeout=300), connect_from_env(),
            boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]))


def prepare(n: int) -> None:
    import boto3
    from elasticsearch import Elasticsearch

    import seed_data

    es = Elasticsearch(os.environ["ES_URL"], request_timeout=300)
    names = index_names(n)
    if not (es.indices.exists(index=names["messages"]) and es.count(index=names["messages"])["count"] == n):
        started = time.monotonic()
        seed_data.load(es, seed_data.SeedConfig(messages=n, days=1, start=DAY, seed=5), index_names=names)
        print(f"seeded {n} messages in {time.monotonic() - started:.1f}s", file=sys.stderr)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    bucket = export_config(n).bucket
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    # A fresh tracking database, so every run exports everything.
    import MySQLdb

    conn = MySQLdb.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"])
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
        cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
    conn.close()


def step(name: str, n: int, batch_size: int, layout: str = "per_message", max_batches: int = 0) -> dict:
    """Run one step in this process and report its figures (called in a child process).

    `process` handles the batches of the extract; `max_batches` > 0 processes only that many.
    """
    from es_export import pipeline
    from es_export.config import RunParams

    es, conn, s3 = clients()
    cfg = dataclasses.replace(export_config(n), layout=layout)
    params = RunParams(start=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC),
                       end=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(days=1),
                       batch_size=batch_size)
    job = pipeline.open_job(conn, dag_id="bench", run_id=f"bench-{n}", params=params)
    started = time.monotonic()
    if name == "extract":
        count = pipeline.extract(es, conn, cfg, job).ids_found
    else:
        batches = pipeline.plan(conn, cfg, job, params)
        batches = batches[:max_batches] if max_batches else batches
        count = sum(pipeline.process_batch(es, conn, s3, cfg, b, run_id=job.run_id).completed for b in batches)
    elapsed = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": name, "messages": count, "seconds": round(elapsed, 2),
            "per_second": round(count / elapsed, 1) if elapsed else None, "peak_rss_mb": round(peak_mb, 1)}


def run_step(name: str, n: int, batch_size: int = 500, layout: str = "per_message", max_batches: int = 0) -> dict:
    """One step in a fresh child process, so the peak RSS is the step's own."""
    out = subprocess.run([sys.executable, __file__, "--messages", str(n), "--batch-size", str(batch_size),
                          "--layout", layout, "--max-batches", str(max_batches), "--step", name],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--layout", default="per_message", choices=["per_message", "ndjson_gzip"])
    parser.add_argument("--max-batches", type=int, default=0)
    parser.add_argument("--step", choices=["extract", "process"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.messages, args.batch_size, args.layout, args.max_batches)))
        return 0
    prepare(args.messages)
    for name in ("extract", "process"):
        r = run_step(name, args.messages, args.batch_size, args.layout, args.max_batches)
        print(f"{r['step']:8} {r['messages']:>9} messages {r['seconds']:>8.2f}s {r['per_second']:>10,.0f} msg/s"
              f"   peak RSS {r['peak_rss_mb']:>7.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
