"""Measure the export's steps on the local stack: throughput and peak memory of extract and process.

    PYTHONPATH=include:devstack python bench/export_steps.py --messages 100000
    PYTHONPATH=include:devstack python bench/export_steps.py --messages 10000 --layout ndjson_gzip \
        --profile build/process.prof     # cProfile of the process step (read with python -m pstats)

Seeds N messages on one day into indices of their own (kept between runs with the same N and
BENCH_NAME, "bench" by default), then
runs each step in a fresh child process (so its peak RSS is its own) with the same core functions
the DAG's tasks call, against a tracking database of its own. Prints one line per step.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import multiprocessing
import os
import pstats
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAY = date(2024, 10, 1)
# BENCH_NAME keeps two benchmarks on one stack apart: their indices, bucket and tracking database.
NAME = os.environ.get("BENCH_NAME", "bench")
DB = "tracking_test_bench" if NAME == "bench" else f"tracking_test_{NAME}"


def index_names(n: int) -> dict[str, str]:
    import seed_data

    return {name: f"{NAME}-{n}-{name}" for name in seed_data.MAPPINGS}


def export_config(n: int):
    from es_export.config import ExportConfig

    names = index_names(n)
    return ExportConfig(messages_index=names["messages"], history_index=names["message_history"],
                        status_index=names["message_status"], audit_index=names["message_audit"],
                        bucket=f"{NAME}-{n}")


def clients(upload_concurrency: int = 16):
    from es_export import clients as package_clients
    from es_export import search

    # The package's own clients: the search client the tasks and the Lambda connect with (engine detected,
    # answers read with jsonio); mysqlclient as Airflow's workers use it; S3 with its retries and a
    # connection pool as large as the uploads in flight.
    return (search.connect(search.SearchSettings(os.environ["ES_URL"], request_timeout=300)),
            package_clients.mysql(package_clients.MySQLSettings.from_env(database=DB), driver="mysqldb"),
            package_clients.s3(upload_concurrency, endpoint_url=os.environ["AWS_ENDPOINT_URL"]))


def ensure_bucket(bucket: str, endpoint_url: str | None = None) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url or os.environ["AWS_ENDPOINT_URL"])
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)


def prepare(n: int) -> None:
    from elasticsearch import Elasticsearch

    import seed_data

    es = Elasticsearch(os.environ["ES_URL"], request_timeout=300)
    names = index_names(n)
    if not (es.indices.exists(index=names["messages"]) and es.count(index=names["messages"])["count"] == n):
        started = time.monotonic()
        seed_data.load(es, seed_data.SeedConfig(messages=n, days=1, start=DAY, seed=5), index_names=names)
        print(f"seeded {n} messages in {time.monotonic() - started:.1f}s", file=sys.stderr)
    ensure_bucket(export_config(n).bucket)
    empty_bucket(export_config(n).bucket)
    fresh_database(DB)  # so every run exports everything


def empty_bucket(bucket: str, endpoint_url: str | None = None) -> None:
    """Delete every object: a fresh tracking database numbers jobs and batches from 1 again, and the
    NDJSON files of an earlier run with the same numbers would be read back and rewritten as superseded."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url or os.environ["AWS_ENDPOINT_URL"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def fresh_database(name: str) -> None:
    """An empty tracking database of that name on the stack's server."""
    import MySQLdb

    conn = MySQLdb.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"])
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()


def _warm(_: int) -> None:
    import boto3  # noqa: F401
    import elasticsearch  # noqa: F401
    import MySQLdb  # noqa: F401

    import es_export.pipeline  # noqa: F401


def warm_pool(processes: int) -> Any:
    """A pool of `processes` spawned workers with the package and its clients' libraries imported."""
    pool = multiprocessing.get_context("spawn").Pool(processes)
    pool.map(_warm, range(processes))
    return pool


def count_s3_requests(s3: Any) -> list[int]:
    """A one-item list that counts every HTTP request the S3 client sends from now on (retries included)."""
    sent = [0]

    def count(**_: Any) -> None:
        sent[0] += 1

    s3.meta.events.register("before-send.s3", count)
    return sent


def _process_share(n: int, cfg: Any, batches: list[Any], run_id: str, upload_concurrency: int) -> tuple[int, int]:
    """Process these batches one after another with clients of this process's own (one mapped task's work);
    the messages completed and the S3 requests sent."""
    from es_export import pipeline

    es, conn, s3 = clients(upload_concurrency)
    sent = count_s3_requests(s3)
    try:
        done = sum(pipeline.process_batch(es, conn, s3, cfg, b, run_id=run_id).completed for b in batches)
        return done, sent[0]
    finally:
        conn.close()


def step(name: str, n: int, batch_size: int, layout: str = "per_message", max_batches: int = 0,
         upload_concurrency: int = 16, profile: str | None = None, parallel: int = 1) -> dict:
    """Run one step in this process and report its figures (called in a child process).

    `process` handles the batches of the extract; `max_batches` > 0 processes only that many.
    `parallel` > 1 processes that many batches at once, each process taking every parallel-th
    batch, as mapped tasks in the batch pool do on several workers.
    With `profile`, the step runs under cProfile and its stats are written to that file.
    """
    from es_export import pipeline
    from es_export.config import RunParams

    es, conn, s3 = clients(upload_concurrency)
    cfg = dataclasses.replace(export_config(n), layout=layout, upload_concurrency=upload_concurrency)
    params = RunParams(start=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC),
                       end=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(days=1),
                       batch_size=batch_size)
    job = pipeline.open_job(conn, dag_id="bench", run_id=f"bench-{n}", params=params)
    profiler = cProfile.Profile() if profile else None
    # Workers started (and their imports loaded) before the clock, like the Airflow workers of mapped tasks.
    pool = warm_pool(parallel) if name == "process" and parallel > 1 else None
    started = time.monotonic()
    s3_requests = 0
    if name == "extract":
        count = pipeline.extract(es, conn, cfg, job).ids_found
    else:
        batches = pipeline.plan(conn, cfg, job, params)
        batches = batches[:max_batches] if max_batches else batches
        if profiler:
            profiler.enable()
        if pool:
            shares = pool.starmap(_process_share, [(n, cfg, batches[i::parallel], job.run_id, upload_concurrency)
                                                   for i in range(parallel)])
        else:
            shares = [_process_share(n, cfg, batches, job.run_id, upload_concurrency)]
        count, s3_requests = sum(c for c, _ in shares), sum(r for _, r in shares)
        if profiler:
            profiler.disable()
    elapsed = time.monotonic() - started
    if pool:
        pool.close()
        pool.join()
    if profiler and profile:
        profiler.dump_stats(profile)
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    # BENCH_SKIP_STORED: S3Proxy's listing repeats its continuation token, so the S3 server bench skips it.
    stored = stored_bytes(s3, cfg) if name == "process" and not os.environ.get("BENCH_SKIP_STORED") else (0, 0)
    return {"step": name, "messages": count, "seconds": round(elapsed, 2),
            "per_second": round(count / elapsed, 1) if elapsed else None, "peak_rss_mb": round(peak_mb, 1),
            "s3_requests": s3_requests, "s3_objects": stored[0], "s3_bytes": stored[1]}


def stored_bytes(s3: Any, cfg: Any) -> tuple[int, int]:
    """The data objects the export left on S3 (the bucket is emptied before a run), and their bytes."""
    from es_export import sink

    objects = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=f"{cfg.prefix}/dt="):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(sink.DATA_SUFFIXES):
                objects, size = objects + 1, size + obj["Size"]
    return objects, size


def run_step(name: str, n: int, batch_size: int = 500, layout: str = "per_message", max_batches: int = 0,
             upload_concurrency: int = 16, env: dict[str, str] | None = None, parallel: int = 1) -> dict:
    """One step in a fresh child process, so the peak RSS is the step's own; `env` adds to its environment
    (another S3 endpoint, say). Its result also holds what the step cost: `cpu` (CPU seconds of the step's
    processes and of each service), `es_requests` (HTTP requests Elasticsearch served) and
    `mysql_statements` (statements MariaDB ran), measured around the child."""
    before = costs()
    out = subprocess.run([sys.executable, __file__, "--messages", str(n), "--batch-size", str(batch_size),
                          "--layout", layout, "--max-batches", str(max_batches), "--upload-concurrency",
                          str(upload_concurrency), "--parallel", str(parallel), "--step", name],
                         capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), **cost_since(before)}


def costs() -> dict[str, Any]:
    """The counters a step's cost is the difference of: CPU seconds, Elasticsearch requests, MySQL statements."""
    return {"cpu": cpu_seconds(), "es_requests": es_requests(), "mysql_statements": mysql_statements()}


def cost_since(before: dict[str, Any]) -> dict[str, Any]:
    now = costs()
    return {"cpu": {k: round(v - before["cpu"].get(k, 0.0), 2) for k, v in now["cpu"].items()},
            "es_requests": now["es_requests"] - before["es_requests"],
            "mysql_statements": now["mysql_statements"] - before["mysql_statements"]}


def es_requests() -> int:
    """HTTP requests Elasticsearch has served, summed over its REST routes (`_nodes/stats/http`, 8.x+)."""
    import urllib.request

    with urllib.request.urlopen(os.environ["ES_URL"].rstrip("/") + "/_nodes/stats/http") as resp:
        nodes = json.load(resp)["nodes"].values()
    return sum(route["requests"]["count"] for node in nodes for route in node["http"].get("routes", {}).values())


def mysql_statements() -> int:
    """Statements MariaDB has run for its clients (`Questions`), less the one that reads it."""
    import MySQLdb

    conn = MySQLdb.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"])
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--layout", default="per_message", choices=["per_message", "ndjson_gzip", "parquet"])
    parser.add_argument("--max-batches", type=int, default=0)
    parser.add_argument("--upload-concurrency", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=1, help="batches processed at once (processes)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the process step into FILE (in this process)")
    parser.add_argument("--step", choices=["extract", "process"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.messages, args.batch_size, args.layout, args.max_batches,
                              args.upload_concurrency, parallel=args.parallel)))
        return 0
    prepare(args.messages)
    if args.profile:
        run_step("extract", args.messages, args.batch_size, args.layout)
        r = step("process", args.messages, args.batch_size, args.layout, args.max_batches, args.upload_concurrency,
                 profile=args.profile)
        print(f"process {r['messages']} messages in {r['seconds']}s ({r['per_second']:,.0f} msg/s) under cProfile; "
              f"stats in {args.profile}")
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)
        return 0
    for name in ("extract", "process"):
        r = run_step(name, args.messages, args.batch_size, args.layout, args.max_batches, args.upload_concurrency,
                     parallel=args.parallel if name == "process" else 1)
        print(f"{r['step']:8} {r['messages']:>9} messages {r['seconds']:>8.2f}s {r['per_second']:>10,.0f} msg/s"
              f"   peak RSS {r['peak_rss_mb']:>7.1f} MB")
        print(f"         CPU seconds: {', '.join(f'{k} {v:.1f}' for k, v in r['cpu'].items())} "
              f"(the machine has {os.cpu_count()} cores)")
        print(f"         requests: Elasticsearch {r['es_requests']:,}, MySQL statements {r['mysql_statements']:,}, "
              f"S3 {r['s3_requests']:,}")
        if r.get("s3_objects"):
            print(f"         stored: {r['s3_objects']:,} objects, {r['s3_bytes']:,} bytes "
                  f"({r['s3_bytes'] / r['messages']:,.0f} bytes a message)")
    return 0


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by the steps (this script's children) and by each service of the local stack,
    read from /proc with the pid files devstack writes: where a step's time goes, machine-wide."""
    from pathlib import Path

    used = {"python (the step)": sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f)
                                     for f in ("ru_utime", "ru_stime"))}
    ticks = os.sysconf("SC_CLK_TCK")
    for service in ("elasticsearch", "mariadb", "moto"):
        try:
            pid = (Path(__file__).resolve().parents[1] / ".local" / "pids" / f"{service}.pid").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[service] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, ValueError, IndexError):
            continue  # a service not run by devstack (ES_URL elsewhere): not counted
    return used


if __name__ == "__main__":
    sys.exit(main())
