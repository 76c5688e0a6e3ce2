"""What a refresh costs against re-exporting the day: `make bench` runs it after the other steps.

    PYTHONPATH=include:devstack:bench python bench/refresh_day.py --messages 100000 --changed 0.01

Seeds (or reuses) N messages on one day, exports the day (NDJSON gzip, batches of 500, in this process),
then changes the history of `changed` of them (one new history document each, written now) and
measures, one after the other: es_message_refresh's steps (find_changes, plan, every batch) and a
`reprocess=true` re-export of the whole day (extract, plan, every batch). Prints both times, their
ratio (goal <= 0.1x) and the Elasticsearch requests of the refresh per changed message; with --out,
writes them as a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from export_steps import DAY, clients, export_config, prepare

HEADING = "## Keeping the archive current: a refresh against a re-export"


class RequestCounter:
    """Counts the HTTP requests of an Elasticsearch client (every clone of it shares its transport)."""

    def __init__(self, es) -> None:
        self.count = 0
        transport = es.transport
        real = transport.perform_request

        def counting(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        transport.perform_request = counting


def export_all(es, conn, s3, cfg, run_id: str, reprocess: bool = False) -> float:
    from es_export import pipeline, tracking
    from es_export.config import RunParams

    started = time.monotonic()
    params = RunParams(start=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC),
                       end=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(days=1),
                       batch_size=500, reprocess=reprocess)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id, params=params)
    pipeline.extract(es, conn, cfg, job)
    for batch in pipeline.plan(conn, cfg, job, params):
        pipeline.process_batch(es, conn, s3, cfg, batch, run_id=run_id)
    tracking.update_job(conn, job.job_id, status="completed")  # as its reconcile does: no longer live
    return time.monotonic() - started


def change_history(es, cfg, ids: list[str]) -> None:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = []
    for mid in ids:
        lines += [json.dumps({"index": {"_index": cfg.history_index}}),
                  json.dumps({"message_id": mid, "timestamp": now, "event": "read"})]
    es.bulk(operations="\n".join(lines) + "\n", refresh=True)


def refresh_all(es, conn, s3, cfg, since: datetime) -> tuple[float, float, int, int]:
    """es_message_refresh's steps: (seconds to find and take the changes, seconds of the batches, taken, done)."""
    from es_export import pipeline
    from es_export.config import RefreshParams

    started = time.monotonic()
    job = pipeline.open_refresh_job(es, conn, cfg, dag_id="es_message_refresh", run_id=f"bench-{since.timestamp()}",
                                    params=RefreshParams(since=since))
    found = pipeline.find_changes(es, conn, cfg, job)
    batches = pipeline.plan_taken(conn, cfg, job, batch_size=500)
    found_at = time.monotonic()
    done = sum(pipeline.process_batch(es, conn, s3, cfg, b, run_id=job.run_id).completed for b in batches)
    pipeline.finish_refresh(conn, s3, cfg, job, vars(found))
    return found_at - started, time.monotonic() - found_at, found.rewritten, done


def measure(n: int, share: float, layout: str) -> dict:
    """Export the day in `layout`, change `share` of its messages, refresh, then re-export it with reprocess."""
    from dataclasses import replace

    from es_export import tracking
    from es_export.config import Layout

    prepare(n)
    cfg = replace(export_config(n), layout=Layout(layout), refresh_lookback_days=1)
    es, conn, s3 = clients()
    try:
        export_all(es, conn, s3, cfg, "bench-export")
        with conn.cursor() as cur:
            cur.execute("SELECT message_id FROM message_tracking ORDER BY id")
            ids = [r[0] for r in cur.fetchall()]
        conn.commit()
        changed = ids[:: max(1, round(1 / share))]
        since = datetime.now(UTC) - timedelta(seconds=1)
        change_history(es.es, cfg, changed)  # the package's SearchClient only reads; writes go to its client
        counter = RequestCounter(es.es)
        find_seconds, batch_seconds, rewritten, done = refresh_all(es, conn, s3, cfg, since)
        requests = counter.count
        reprocess_seconds = export_all(es, conn, s3, cfg, "bench-reprocess", reprocess=True)
        assert rewritten == done == len(changed), (rewritten, done, len(changed))
        assert tracking.watermark(conn, "es_message_refresh") is not None
    finally:
        conn.close()
    return {"layout": layout, "messages": len(ids), "changed": len(changed), "find": find_seconds,
            "batches": batch_seconds, "reprocess": reprocess_seconds, "requests": requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of the day's messages that change")
    parser.add_argument("--layouts", default="ndjson_gzip,per_message")
    parser.add_argument("--out", help="BENCHMARKS.md to write the section into")
    args = parser.parse_args()
    results = [measure(args.messages, args.changed, layout) for layout in args.layouts.split(",") if layout]
    rows = ["| layout | messages / changed | refresh: find and take the changes | refresh: its batches | "
            "`reprocess=true` re-export of the day | refresh / re-export (goal <= 0.1x) | Elasticsearch requests "
            "of the refresh per changed message |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = (r["find"] + r["batches"]) / r["reprocess"]
        verdict = "MET" if ratio <= 0.1 else "MISSED"
        rows.append(f"| {r['layout']} | {r['messages']:,} / {r['changed']:,} | {r['find']:.1f} s | "
                    f"{r['batches']:.1f} s | {r['reprocess']:.1f} s | {ratio:.3f}x {verdict} | "
                    f"{r['requests'] / r['changed']:.3f} ({r['requests']:,} in all) |")
    section = "\n".join([
        HEADING, "", f"Measured by `bench/refresh_day.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, moto as S3: a "
        f"tracked day of {args.messages:,} messages, {args.changed:.0%} of them given a new history document, then "
        "es_message_refresh's steps in one process (batches of 500, one after the other), then a `reprocess=true` "
        "re-export of the same day. In the NDJSON layout a changed message's old document is removed from the "
        "file that held it: with 1% of messages changed spread over the day, that rewrites nearly every file of "
        "the day, which is most of the refresh's batch time.", "", *rows, ""])
    print(section)
    if args.out:
        out = Path(args.out)
        text = out.read_text() if out.exists() else "# Benchmarks\n"
        before, _, rest = text.partition(HEADING)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        out.write_text(before.rstrip("\n") + "\n\n" + section + after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
