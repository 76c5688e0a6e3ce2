"""`make bench`: this package side by side with the limits of the stack, the naive design and elasticdump.

    PYTHONPATH=include:devstack:bench python bench/run_bench.py --messages 100000

Seeds N messages on one day, then measures in one run, on the same data:
  limits: PIT + search_after id scan, _mget + _msearch detail fetch, MariaDB multi-row insert, S3 PUT;
  this package: extract, process (per-message layout and NDJSON gzip layout), end to end;
  the design document's naive approach (bench/naive_export.py) on a sample of the messages;
  elasticdump (pinned in bench/package.json) with its defaults and tuned, dumping the day's messages;
  and the extract step's peak memory at several sizes. Prints a table and writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from export_steps import DAY, DB, export_config, prepare, run_step

ROOT = Path(__file__).resolve().parents[1]
ELASTICDUMP = ROOT / "bench" / "node_modules" / ".bin" / "elasticdump"


def measure_cmd(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the command's process tree, and its stdout."""
    wrapper = ("import resource, subprocess, sys, json\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stderr.write(p.stderr[-2000:])\n"
               "print(json.dumps({'rc': p.returncode, 'out': p.stdout[-4000:],"
               " 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - started
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    return elapsed, result["rss"] / 1024, result["out"]


def limits(n: int) -> dict[str, float]:
    """What the services allow on this machine, measured with the thinnest client code."""
    import boto3
    from botocore.config import Config
    from elasticsearch import Elasticsearch

    from es_export import source
    from es_export.migrate import connect_from_env

    cfg = export_config(n)
    es = Elasticsearch(os.environ["ES_URL"], request_timeout=300)
    started = time.monotonic()
    ids = [h["_id"] for h in source.scan(es, cfg.messages_index, {"match_all": {}}, [{"_shard_doc": "asc"}],
                                         10000, "2m")]
    scan_rate = len(ids) / (time.monotonic() - started)
    # The extract's own query: the day's range, sorted by timestamp (what makes resuming possible).
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    started = time.monotonic()
    same_query = sum(1 for _ in source.stream_ids(es, cfg, start, start + timedelta(days=1)))
    ts_scan_rate = same_query / (time.monotonic() - started)

    sample = ids[:10_000]
    started = time.monotonic()
    for i in range(0, len(sample), 500):
        source.fetch_details(es, cfg, sample[i:i + 500])
    details_rate = len(sample) / (time.monotonic() - started)

    os.environ["MYSQL_DB"] = DB
    conn = connect_from_env()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_insert (id VARCHAR(512) PRIMARY KEY, ts DATETIME(6))")
        cur.execute("TRUNCATE bench_insert")
        rows = ids[:200_000]
        started = time.monotonic()
        for i in range(0, len(rows), 2000):
            chunk = rows[i:i + 2000]
            cur.execute("INSERT IGNORE INTO bench_insert VALUES " + ", ".join(["(%s, UTC_TIMESTAMP(6))"] * len(chunk)),
                        chunk)
            conn.commit()
        insert_rate = len(rows) / (time.monotonic() - started)
    conn.close()

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], config=Config(max_pool_connections=32))
    body = b"x" * 1300  # about the size of a sample message's document
    puts = 2000
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=cfg.bucket, Key=f"limit/{i}.json", Body=body), range(puts)))
    put_rate = puts / (time.monotonic() - started)
    return {"scan": scan_rate, "ts_scan": ts_scan_rate, "details": details_rate, "insert": insert_rate,
            "put": put_rate}


def naive(n: int, limit: int) -> dict:
    cfg = export_config(n)
    elapsed, rss, out = measure_cmd([sys.executable, str(ROOT / "bench" / "naive_export.py"), "--index",
                                     cfg.messages_index, "--history-index", cfg.history_index, "--status-index",
                                     cfg.status_index, "--audit-index", cfg.audit_index, "--day", DAY.isoformat(),
                                     "--bucket", cfg.bucket, "--database", DB, "--limit", str(limit)])
    r = json.loads(out.strip().splitlines()[-1])
    return {"rate": r["messages"] / r["seconds"], "rss": rss, "found": r["found"], "messages": r["messages"]}


def elasticdump(n: int, tuned: bool) -> dict:
    cfg = export_config(n)
    out_file = Path(tempfile.gettempdir()) / f"elasticdump-{uuid.uuid4().hex[:6]}.json"
    body = json.dumps({"query": {"range": {"timestamp": {"gte": DAY.isoformat(), "lt": "2024-10-02"}}}})
    cmd = [str(ELASTICDUMP), f"--input={os.environ['ES_URL']}/{cfg.messages_index}", f"--output={out_file}",
           f"--searchBody={body}", "--quiet"]
    if tuned:
        cmd += ["--limit=10000", "--intervalCap=100", "--concurrency=4"]
    elapsed, rss, _ = measure_cmd(cmd)
    lines = sum(1 for _ in out_file.open()) if out_file.exists() else 0
    out_file.unlink(missing_ok=True)
    return {"rate": lines / elapsed, "rss": rss, "lines": lines, "seconds": elapsed}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.platform()}, Python "
            f"{platform.python_version()}; Elasticsearch 9.5.3 (1 node, 512 MB heap), MariaDB, moto S3 server")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=int(os.environ.get("N", "100000")))
    parser.add_argument("--naive-limit", type=int, default=1000, help="messages the naive script handles")
    parser.add_argument("--per-message-batches", type=int, default=20,
                        help="batches of 500 the per-message process step handles (S3 PUT bound)")
    parser.add_argument("--memory-points", default="10000,100000,1000000")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    n = args.messages
    started = datetime.now(UTC)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    log(f"seeding {n} messages on {DAY}")
    prepare(n)
    log("measuring the limits")
    lim = limits(n)
    log("this package: extract + process (per-message layout)")
    ex = run_step("extract", n)
    pm = run_step("process", n, max_batches=args.per_message_batches)
    prepare(n)
    log("this package: extract + process (NDJSON gzip layout)")
    ex2 = run_step("extract", n)
    nd = run_step("process", n, layout="ndjson_gzip")
    log(f"naive approach on {args.naive_limit} messages")
    nv = naive(n, args.naive_limit)
    log("elasticdump, defaults and tuned")
    ed = elasticdump(n, tuned=False)
    edt = elasticdump(n, tuned=True)
    memory = {}
    for point in [int(p) for p in args.memory_points.split(",") if p]:
        log(f"extract peak memory at {point} messages")
        prepare(point)
        memory[point] = run_step("extract", point)

    def e2e(a: dict, b: dict) -> float:
        return 1 / (1 / a["per_second"] + 1 / b["per_second"])

    e2e_pm, e2e_nd = e2e(ex, pm), e2e(ex2, nd)
    rows = [
        ("limit: PIT + search_after id scan, match_all in index order", lim["scan"], None, None, None, None),
        ("limit: PIT + search_after id scan, day range in timestamp order", lim["ts_scan"], None, None, None, None),
        ("limit: _mget + _msearch details (500 a batch)", lim["details"], None, None, None, None),
        ("limit: MariaDB multi-row INSERT (2000 a statement)", lim["insert"], None, None, None, None),
        ("limit: S3 PUT, 16 in flight (moto)", lim["put"], None, None, None, None),
        ("package: extract (ratio to the timestamp-ordered scan)", ex["per_second"], lim["ts_scan"], None, None,
         ex["peak_rss_mb"]),
        ("package: process, per-message objects", pm["per_second"], lim["put"], nv["rate"], None, pm["peak_rss_mb"]),
        ("package: end to end, per-message objects", e2e_pm, min(lim["scan"], lim["details"], lim["put"]),
         nv["rate"], edt["rate"], max(ex["peak_rss_mb"], pm["peak_rss_mb"])),
        ("package: process, NDJSON gzip per batch", nd["per_second"], lim["details"], nv["rate"], None,
         nd["peak_rss_mb"]),
        ("package: end to end, NDJSON gzip", e2e_nd, min(lim["scan"], lim["details"]), nv["rate"], edt["rate"],
         max(ex2["peak_rss_mb"], nd["peak_rss_mb"])),
        (f"naive design (first {nv['messages']} of the {nv['found']} ids it finds)", nv["rate"], None, nv["rate"],
         None, nv["rss"]),
        ("elasticdump, defaults (messages only, no details)", ed["rate"], None, None, None, ed["rss"]),
        ("elasticdump, tuned --limit=10000 (messages only)", edt["rate"], None, None, edt["rate"], edt["rss"]),
    ]
    header = "| step | messages/s | ratio to limit | ratio to naive | ratio to tuned elasticdump | peak RSS MB |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for name, rate, limit, naive_rate, dump_rate, rss in rows:
        lines.append(f"| {name} | {rate:,.0f} | {ratio(rate, limit)} | {ratio(rate, naive_rate)} | "
                     f"{ratio(rate, dump_rate)} | {f'{rss:,.0f}' if rss else '-'} |")
    mem_lines = ["| messages | extract seconds | extract messages/s | peak RSS MB |", "|---:|---:|---:|---:|"]
    mem_lines += [f"| {k:,} | {v['seconds']:.1f} | {v['per_second']:,.0f} | {v['peak_rss_mb']:.1f} |"
                  for k, v in memory.items()]
    rss_values = [v["peak_rss_mb"] for v in memory.values()]
    spread = (max(rss_values) / min(rss_values) - 1) * 100 if rss_values else 0
    targets = [
        ("extract at least half the raw scan rate", ex["per_second"] >= 0.5 * lim["ts_scan"],
         f"{ex['per_second'] / lim['ts_scan']:.2f} of the same query's raw scan, "
         f"{ex['per_second'] / lim['scan']:.2f} of a match_all scan in index order"),
        ("end-to-end local dispatch at least 10x the naive approach", e2e_pm >= 10 * nv["rate"],
         f"per-message {e2e_pm / nv['rate']:.1f}x, NDJSON {e2e_nd / nv['rate']:.1f}x"),
        ("NDJSON layout at least 1,000 messages/s end to end", e2e_nd >= 1000, f"{e2e_nd:,.0f} messages/s"),
        ("at least 3x tuned elasticdump", e2e_nd >= 3 * edt["rate"],
         f"NDJSON end to end {e2e_nd / edt['rate']:.1f}x, per-message {e2e_pm / edt['rate']:.1f}x"),
        ("extract memory within 20% from 10,000 to 1,000,000", spread <= 20, f"spread {spread:.1f}%"),
    ]
    target_lines = [f"- {'MET' if ok else 'MISSED'}: {name} ({detail})" for name, ok, detail in targets]
    report = "\n".join([
        "# Benchmarks", "",
        f"Measured by `make bench` (N={n:,}) on {started:%Y-%m-%d %H:%M} UTC.", "",
        f"Machine: {machine()}.", "",
        "End to end = extract and process one after the other (1 / (1/extract + 1/process)). The naive design",
        f"runs on the first {nv['messages']:,} messages only (at tens of messages a second); it finds at most",
        "10,000 ids (its `size=10000` search), which is the design document's silent short export. elasticdump",
        "writes only the message documents (no history, status or audit) to a local file.",
        f"The per-message process step ran {args.per_message_batches} batches of 500: it is bound by the local",
        "S3 server's PUT rate (moto, a single Python process).", "",
        *lines, "", "## Extract peak memory by size", "", *mem_lines, "", "## Targets", "", *target_lines, "",
    ])
    Path(args.out).write_text(report)
    print("\n".join(lines + [""] + mem_lines + [""] + target_lines))
    log(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
