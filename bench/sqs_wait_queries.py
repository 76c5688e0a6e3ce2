"""MySQL statements per minute while the batches of a dispatch=sqs run wait for the Lambda: before
(each `process` task a reschedule-mode sensor poking its batch) and after (BatchesSettledTrigger:
the waits of a job share one poll in the triggerer).

    set -a; . .local/stack.env; set +a
    PYTHONPATH=include .venv/bin/python bench/sqs_wait_queries.py [--batches 500] [--poke-seconds 30] [--window 60]

Counts what the tracking server counts: `Questions`, the statements clients sent.

before  one poke of one waiting batch, as a rescheduled sensor runs it in a fresh interpreter:
        a new connection of the `mysql_tracking` connection (MySqlHook, as `batch_sensor._wait_for_sqs`),
        expire_stalled_batch + batch_state, close. Counted as the delta of SHOW GLOBAL STATUS around
        it (the reading's own statement subtracted; the median of --samples pokes, so another
        client's statement now and then does not count) and on the poke's own connection (SHOW
        SESSION STATUS, before the close). Per minute: batches x 60 / poke-seconds x statements per poke.
after   --batches BatchesSettledTrigger instances of one job in one asyncio loop (as in the triggerer)
        with poll_seconds = poke-seconds, waiting --window seconds. Counted on the poll's one
        connection (SHOW SESSION STATUS: exact whatever other clients of the shared server do; a
        global delta over a minute is not), and the polls through a wrapper of the poll. Per
        minute: the window's count scaled to 60 s (it includes connecting), and the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import uuid
from datetime import UTC, datetime

DB = "tracking_test_bench_sqs_wait"


def settings():
    from es_export import clients

    return clients.MySQLSettings.from_env(database=DB)


def fresh_database() -> None:
    from es_export import clients, tracking

    admin = clients.mysql(clients.MySQLSettings.from_env(), driver="mysqldb")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
        cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
    admin.close()
    conn = clients.mysql(settings(), driver="mysqldb")
    tracking.migrate(conn)
    conn.close()


def queued_job(batches: int):
    """A job whose plan cut `batches` one-message batches and queued them all (dispatch=sqs)."""
    from es_export import clients, pipeline, tracking
    from es_export.config import ExportConfig, RunParams
    from es_export.source import IdHit

    conn = clients.mysql(settings(), driver="mysqldb")
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    params = RunParams(start=start, end=datetime(2024, 1, 2, tzinfo=UTC), batch_size=1)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id, params=params)
    tracking.insert_chunk(conn, [IdHit(f"{run_id}-{i}", start) for i in range(batches)], job=job)
    conn.commit()
    cfg = ExportConfig(messages_index="m", history_index="h", status_index="s", audit_index="a", bucket="b",
                       max_batches=batches)
    planned = pipeline.plan(conn, cfg, job, params)
    tracking.mark_dispatched(conn, [b.batch_id for b in planned], lease_seconds=3600)
    conn.close()
    return job, planned


class Questions:
    """The server's Questions counter, read on a connection of its own."""

    def __init__(self):
        from es_export import clients

        self._conn = clients.mysql(settings(), driver="mysqldb")
        first = self.read()
        self.own = self.read() - first  # what one reading adds to the count (its own statement)

    def read(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            return int(cur.fetchone()[1])

    def since(self, before: int) -> int:
        """Statements of every client since `before` was read, without the readings' own."""
        return self.read() - before - self.own


def session_questions(conn) -> int:
    """Statements this connection sent so far, without this reading."""
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Questions'")
        return int(cur.fetchone()[1]) - 1


def measure_poke(questions: Questions, batch_id: int) -> tuple[int, int]:
    """One reschedule-mode poke's MySQL part: (global delta, the poke connection's own count)."""
    from es_export import tracking
    from es_export.model import RetryPolicy
    from es_export_airflow.connections import mysql_connection

    before = questions.read()
    with mysql_connection() as conn:  # as batch_sensor._wait_for_sqs: a new connection per poke
        tracking.expire_stalled_batch(conn, batch_id, policy=RetryPolicy())
        tracking.batch_state(conn, batch_id)
        own = session_questions(conn)
    return questions.since(before) - 1, own  # - 1: the session reading


async def wait_with_triggers(batches, poke_seconds: float, window: float) -> tuple[int, int]:
    """Every batch's trigger waiting for `window` seconds: (polls run, statements on the poll's connection)."""
    from es_export_airflow import triggers
    from es_export_airflow.triggers import BatchesSettledTrigger

    polls = 0
    real = triggers.progress_of_job

    def counting(conn, job_id):
        nonlocal polls
        polls += 1
        return real(conn, job_id)

    triggers.progress_of_job = counting
    try:
        waiting = [asyncio.create_task(anext(BatchesSettledTrigger(
            job_id=b.job_id, batch_id=b.batch_id, batch_no=b.batch_no, poll_seconds=poke_seconds,
            sqs_max_receive=3).run())) for b in batches]
        await asyncio.sleep(window)
        assert not any(t.done() for t in waiting), "a batch settled while nothing changed"
        (poller,) = triggers._Poller._running.values()  # one poller for the job: read its connection's count
        own = await asyncio.to_thread(lambda: session_questions(poller._conn))
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return polls, own
    finally:
        triggers.progress_of_job = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--poke-seconds", type=float, default=30.0, help="ES_EXPORT_POKE_SECONDS")
    parser.add_argument("--window", type=float, default=60.0, help="seconds the triggers wait (and the idle window)")
    parser.add_argument("--samples", type=int, default=20, help="pokes measured for 'before'")
    args = parser.parse_args()

    # The Airflow connection the poke and the triggers use, pointed at the bench's database.
    conn_json = json.loads(os.environ["AIRFLOW_CONN_MYSQL_TRACKING"])
    os.environ["AIRFLOW_CONN_MYSQL_TRACKING"] = json.dumps({**conn_json, "schema": DB})
    fresh_database()
    job, batches = queued_job(args.batches)
    questions = Questions()
    pokes_per_minute = 60 / args.poke_seconds

    measured = [measure_poke(questions, b.batch_id) for b in batches[:args.samples]]
    per_poke = statistics.median(g for g, _ in measured)
    per_poke_own = statistics.median(o for _, o in measured)
    before = args.batches * pokes_per_minute * per_poke

    polls, in_window = asyncio.run(wait_with_triggers(batches, args.poke_seconds, args.window))
    after_measured = in_window * 60 / args.window
    after_steady = pokes_per_minute * 1  # one statement per poll, for all the job's batches

    print(f"{args.batches} batches of one dispatch=sqs job waiting, poke interval {args.poke_seconds:g} s "
          f"(MariaDB Questions; job {job.job_id} in {DB})")
    print(f"before  reschedule-mode sensors: one poke = new connection + expire_stalled_batch + batch_state = "
          f"{per_poke:g} statements (global delta with the close, median of {len(measured)}; {per_poke_own:g} on the "
          "poke's own connection before its close)")
    print(f"        {args.batches} sensors x {pokes_per_minute:g} pokes/min x {per_poke:g} = {before:,.0f} "
          f"statements/min, {args.batches * pokes_per_minute:,.0f} new connections/min")
    print(f"after   {args.batches} BatchesSettledTrigger in one event loop for {args.window:g} s: {in_window} "
          f"statements on the poll's one connection: {polls} poll(s) of 1 statement + {in_window - polls} "
          "connecting")
    print(f"        measured {after_measured:,.1f} statements/min; steady state {after_steady:g}/min "
          f"({pokes_per_minute:g} polls x 1 statement), 1 connection kept open")
    print(f"ratio   before / after: {before / max(after_measured, 1e-9):,.0f}x measured, "
          f"{before / after_steady:,.0f}x steady state")


if __name__ == "__main__":
    main()
