"""What extract_slices buys: the package's extract of one day with 1, 2 and 4 time slices run at once.

    set -a; . .local/stack.env; set +a
    PYTHONPATH=include:devstack:bench python bench/sliced_extract.py --messages 1000000

Each slice runs `pipeline.extract` in a process of its own, as the mapped `extract` tasks of a run
do on separate workers: its own Elasticsearch point-in-time, its own MySQL connection, its own
checkpoint. Every round starts from an empty tracking database; after it, `finish_extract` must
find exactly the day's messages. Prints the ids a second and the speed-up over one slice.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from datetime import UTC, datetime, timedelta

from export_steps import DAY, DB, clients, export_config, fresh_database, prepare


def _job(conn):
    from es_export import pipeline
    from es_export.config import RunParams

    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    params = RunParams(start=start, end=start + timedelta(days=1))
    return pipeline.open_job(conn, dag_id="bench", run_id="bench-sliced-extract", params=params)


def _extract_slice(n: int, count: int, no: int) -> None:
    from es_export import pipeline

    es, conn, _ = clients()
    job = _job(conn)
    pipeline.extract(es, conn, export_config(n), job, pipeline.slices_of(job, count)[no])
    conn.close()


def sliced_extract(n: int, count: int) -> float:
    """Seconds from the start of the first slice to the end of the last one."""
    from es_export import pipeline, tracking

    fresh_database(DB)
    _, conn, _ = clients()
    tracking.migrate(conn)
    job = _job(conn)
    started = time.monotonic()
    workers = [multiprocessing.Process(target=_extract_slice, args=(n, count, no)) for no in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    if any(w.exitcode for w in workers):
        raise SystemExit(f"a slice failed (exit codes {[w.exitcode for w in workers]})")
    found, _ = pipeline.finish_extract(conn, job, count)
    conn.close()
    if found != n:
        raise SystemExit(f"{count} slice(s) tracked {found} ids, not {n}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    prepare(args.messages)
    print(f"extract of {args.messages:,} messages of one day into MySQL, {multiprocessing.cpu_count()} cores, "
          f"best of {args.rounds} rounds")
    baseline = None
    for count in args.slices:
        best = min(sliced_extract(args.messages, count) for _ in range(args.rounds))
        baseline = baseline or best
        print(f"  extract_slices={count}: {best:7.1f} s  {args.messages / best:>9,.0f} ids/s  "
              f"speed-up {baseline / best:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
