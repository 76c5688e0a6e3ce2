"""A whole day through the export DAG: wall time split by task, and the whole against the sum of its steps.

    set -a; . .local/stack.env; set +a
    PYTHONPATH=include:devstack:bench python bench/dag_day.py --messages 1000000

Seeds N messages on one day (bench/export_steps.py's indices, kept between runs with the same N), then runs
es_message_export for that day with `dag.test()` (the DAG file as Airflow parses it, every task in this
process), NDJSON gzip layout, local dispatch, against a fresh tracking database. Reads the run's task
instances from Airflow's metadata database and prints each step's time (start_job, extract, plan, the mapped
batches, reconcile), the run's wall time, and the ratio of the whole to the sum of the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from export_steps import DAY, export_config, fresh_database, index_names, prepare
from run_bench import DAG_DAY_HEADING, NOTES_HEADING

ROOT = Path(__file__).resolve().parents[1]
DB = "tracking_test_bench_dag"


def point_airflow_at(n: int, batch_size: int) -> None:
    """The Variable and the tracking connection of the run, through Airflow's environment variables."""
    cfg = export_config(n)
    names = index_names(n)
    config = {"messages_index": names["messages"], "history_index": names["message_history"],
              "status_index": names["message_status"], "audit_index": names["message_audit"],
              "bucket": cfg.bucket, "layout": "ndjson_gzip",
              # A prefix of its own, so reconcile finds only this run's objects.
              "prefix": f"dag-day/{datetime.now(UTC):%Y%m%dT%H%M%S}"}
    os.environ["AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG"] = json.dumps(config)
    conn = json.loads(os.environ["AIRFLOW_CONN_MYSQL_TRACKING"])
    os.environ["AIRFLOW_CONN_MYSQL_TRACKING"] = json.dumps({**conn, "schema": DB})
    os.environ["ES_EXPORT_DEADLINE_SECONDS"] = "off"  # dag.test() cannot run a DAG with a deadline
    os.environ["ES_EXPORT_POKE_SECONDS"] = "1"


def task_seconds(dag_id: str, run_id: str) -> dict[str, list[float]]:
    """task_id -> the durations of its task instances (one per map index) in the run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    seconds: dict[str, list[float]] = {}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id):
            if ti.start_date and ti.end_date:
                seconds.setdefault(ti.task_id, []).append((ti.end_date - ti.start_date).total_seconds())
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--extract-slices", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="file whose DAG section to write ('' none)")
    args = parser.parse_args()

    prepare(args.messages)
    fresh_database(DB)
    point_airflow_at(args.messages, args.batch_size)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "es_message_export.py")).dags["es_message_export"]
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    conf = {"start": start.date().isoformat(), "end": (start + timedelta(days=1)).date().isoformat(),
            "batch_size": args.batch_size, "dispatch": "local", "extract_slices": args.extract_slices}
    started = time.monotonic()
    run = dag.test(run_conf=conf, logical_date=datetime.now(UTC))
    wall = time.monotonic() - started
    if run.state != "success":
        print(f"the run ended {run.state}", file=sys.stderr)
        return 1
    steps = task_seconds(dag.dag_id, run.run_id)
    total = sum(sum(v) for v in steps.values())
    rows = []
    for task_id in ("start_job", "extract_slices", "extract", "plan", "process", "reconcile"):
        values = steps.get(task_id, [])
        label = f"{task_id} ({len(values)} mapped)" if task_id in ("extract", "process") else task_id
        rows.append(f"| {label} | {sum(values):,.1f} |")
    rows += [f"| sum of the steps | {total:,.1f} |", f"| whole run (wall) | {wall:,.1f} |"]
    section = "\n".join([
        DAG_DAY_HEADING, "",
        f"`bench/dag_day.py --messages {args.messages} --batch-size {args.batch_size} --extract-slices "
        f"{args.extract_slices}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: es_message_export for one day of {args.messages:,} messages",
        "through `dag.test()`, NDJSON gzip, local dispatch, a fresh tracking database. Time of each task",
        "(task instances' start to end; the mapped batches summed):", "",
        "| step | seconds |", "|---|---:|", *rows, "",
        f"Whole / sum of the steps: **{wall / total:.2f}x** (goal <= 1.3x); {args.messages / wall:,.0f} messages/s "
        "end to end.", ""])
    print(section)
    if args.out:
        out = Path(args.out)
        text = out.read_text() if out.exists() else "# Benchmarks"
        before, _, rest = text.partition(DAG_DAY_HEADING)
        notes = "".join(rest.partition(NOTES_HEADING)[1:])  # the hand-written section after this one: kept
        out.write_text(before.rstrip("\n") + "\n\n" + section + ("\n" + notes if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
