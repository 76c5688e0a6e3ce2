"""The sqs wait in the triggerer against the real MariaDB: 50 batches of one job wait in one event
loop, as in Airflow's triggerer, and share ONE poll per interval; each trigger fires when (and only
when) its batch settles, whoever changed it, and a lost connection only costs a poll."""

import asyncio
import time
import uuid

import pytest

import support
from es_export import tracking
from es_export.model import Batch
from es_export_airflow import triggers
from es_export_airflow.triggers import BatchesSettledTrigger

pytestmark = pytest.mark.integration

DB = "tracking_test_trigger"
BATCHES = 50
POLL = 0.2
MAX_RECEIVE = 3


@pytest.fixture(scope="module")
def db(module_monkeypatch):
    support.new_tracking_database(DB).close()
    # The triggers look the connection up as in the triggerer (BaseHook.aget_connection).
    module_monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", support.mysql_connection(DB))
    return DB


@pytest.fixture()
def conn(db):
    c = support.connect(db)
    yield c
    c.close()


@pytest.fixture()
def polls(monkeypatch):
    """Every poll the triggers' pollers run: (job id, monotonic time), through a wrapper of the poll."""
    seen: list[tuple[int, float]] = []
    real = triggers.progress_of_job

    def counting(conn, job_id):
        seen.append((job_id, time.monotonic()))
        return real(conn, job_id)

    monkeypatch.setattr(triggers, "progress_of_job", counting)
    return seen


def queued_job(conn, batches=BATCHES):
    """A planned job whose batches were all sent to the queue, as `plan` leaves them in sqs mode."""
    job, planned = support.planned_job(conn, batches, run_id=f"trigger-{uuid.uuid4().hex[:8]}")
    tracking.mark_dispatched(conn, [b.batch_id for b in planned], lease_seconds=3600)
    return job, planned


def trigger_of(batch: Batch) -> BatchesSettledTrigger:
    return BatchesSettledTrigger(job_id=batch.job_id, batch_id=batch.batch_id, batch_no=batch.batch_no,
                                 poll_seconds=POLL, sqs_max_receive=MAX_RECEIVE)


async def start(batches: list[Batch]) -> dict[int, asyncio.Task]:
    """Each batch's trigger running as the triggerer runs it: a task awaiting its first event."""
    return {b.batch_id: asyncio.create_task(anext(trigger_of(b).run())) for b in batches}


async def settled(waiting: dict[int, asyncio.Task], ids, timeout: float = 5.0) -> dict[int, dict]:
    done, pending = await asyncio.wait([waiting[i] for i in ids], timeout=timeout)
    assert not pending, f"{len(pending)} trigger(s) did not fire within {timeout} s"
    return {i: waiting[i].result().payload for i in ids}


def in_thread(fn, *args, **kwargs):
    """A change made by another worker while the triggers wait (the Lambda, a stall check, a rerun)."""
    return asyncio.to_thread(fn, *args, **kwargs)


def complete(conn, batch_id):
    attempt = tracking.start_batch(conn, batch_id)
    tracking.finish_batch(conn, attempt)


def fail(conn, batch_id, times):
    for _ in range(times):
        tracking.fail_batch(conn, tracking.start_batch(conn, batch_id), "the Lambda ran out of memory")


def execute(conn, sql, *params):
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.commit()


def test_fifty_waits_share_one_poll_and_only_settled_batches_fire(conn, polls):
    job, batches = queued_job(conn)
    ids = [b.batch_id for b in batches]
    changes = {  # batch -> (how it changes, what its trigger's event must say)
        ids[0]: (lambda c, i: complete(c, i), "completed", "completed"),
        ids[1]: (lambda c, i: complete(c, i), "completed", "completed"),
        ids[2]: (lambda c, i: fail(c, i, MAX_RECEIVE), "failed_out", "failed"),
        ids[3]: (lambda c, i: tracking.start_batch(c, i, lease_seconds=0), "lease_expired", "running"),
        ids[4]: (lambda c, i: tracking.reopen_batch(c, i), "undispatched", "pending"),
        ids[5]: (lambda c, i: execute(c, "DELETE FROM batch_progress WHERE id = %s", i), "missing", None),
    }
    still_waiting = [ids[6], ids[7]] + ids[8:]
    other = support.connect(DB)

    async def scenario():
        waiting = await start(batches)
        await asyncio.sleep(POLL * 5)
        assert not [i for i, t in waiting.items() if t.done()], "a trigger fired before anything changed"
        # Not settled: a failure below the receive limit (SQS delivers it again), a batch running in time.
        await in_thread(fail, other, ids[6], MAX_RECEIVE - 1)
        await in_thread(tracking.start_batch, other, ids[7], lease_seconds=3600)
        for batch_id, (change, _, _) in changes.items():
            await in_thread(change, other, batch_id)
        events = await settled(waiting, list(changes))
        await asyncio.sleep(POLL * 5)  # more polls: the others keep waiting
        open_ = [i for i, t in waiting.items() if not t.done()]
        for task in waiting.values():
            task.cancel()  # as the triggerer does for a task cleared or timed out
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        polls_when_cancelled = len(polls)
        await asyncio.sleep(POLL * 3)
        return events, open_, polls_when_cancelled

    began = time.monotonic()
    try:
        events, open_, polls_when_cancelled = asyncio.run(scenario())
    finally:
        other.close()
    elapsed = time.monotonic() - began

    numbers = {b.batch_id: b.batch_no for b in batches}
    for batch_id, (_, reason, status) in changes.items():
        event = events[batch_id]
        assert (event["job_id"], event["batch_id"], event["batch_no"]) == (job.job_id, batch_id, numbers[batch_id])
        assert (event["settled"], event["status"]) == (reason, status), batch_id
    assert events[ids[2]]["receives"] == MAX_RECEIVE
    assert sorted(open_) == sorted(still_waiting)
    # ONE poll per interval for all 50 waits: never a burst of one query per trigger.
    assert {job_id for job_id, _ in polls} == {job.job_id}
    assert 8 <= len(polls) <= elapsed / POLL + 2, (len(polls), elapsed)
    gaps = [b - a for (_, a), (_, b) in zip(polls, polls[1:], strict=False)]
    assert min(gaps) >= POLL * 0.9, f"two polls {min(gaps):.3f} s apart"
    # Every trigger gone: the poller stopped polling.
    assert len(polls) == polls_when_cancelled
    assert not triggers._Poller._running


def test_the_jobs_of_one_triggerer_each_get_their_own_poll(conn, polls):
    job_a, batches_a = queued_job(conn, 3)
    job_b, batches_b = queued_job(conn, 4)
    other = support.connect(DB)

    async def scenario():
        waiting = await start(batches_a + batches_b)
        await asyncio.sleep(POLL * 4)
        await in_thread(complete, other, batches_b[0].batch_id)
        events = await settled(waiting, [batches_b[0].batch_id])
        for task in waiting.values():
            task.cancel()
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        other.close()
    assert events[batches_b[0].batch_id]["settled"] == "completed"
    per_job = {job: sum(1 for j, _ in polls if j == job) for job in (job_a.job_id, job_b.job_id)}
    assert all(3 <= n <= 10 for n in per_job.values()), per_job


def test_a_lost_connection_costs_one_poll_and_the_wait_goes_on(conn, polls, caplog):
    job, batches = queued_job(conn, 5)
    other = support.connect(DB)

    def kill_the_pollers_connection():
        # The poller's connection: the one on this database that is neither this test's nor `other`.
        with other.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s"
                        " AND ID NOT IN (CONNECTION_ID(), %s)", (DB, conn.thread_id()))
            (thread_id,), = cur.fetchall()
            cur.execute(f"KILL CONNECTION {int(thread_id)}")

    async def scenario():
        waiting = await start(batches)
        await asyncio.sleep(POLL * 3)
        await in_thread(kill_the_pollers_connection)
        await asyncio.sleep(POLL * 3)  # a poll fails on the dead connection, the next one reconnects
        await in_thread(complete, other, batches[2].batch_id)
        events = await settled(waiting, [batches[2].batch_id])
        others_open = all(not t.done() for i, t in waiting.items() if i != batches[2].batch_id)
        for task in waiting.values():
            task.cancel()
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        return events, others_open

    caplog.set_level("WARNING", logger="es_export_airflow.triggers")
    try:
        events, others_open = asyncio.run(scenario())
    finally:
        other.close()
    assert events[batches[2].batch_id]["settled"] == "completed" and others_open
    failures = [r for r in caplog.records if r.name == "es_export_airflow.triggers"]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].getMessage().startswith(f"polling the batches of job {job.job_id} failed (OperationalError")


def test_the_triggerers_own_runner_delivers_one_event_per_settled_batch(conn, polls):
    """Airflow's TriggerRunner.run_trigger, the coroutine the triggerer runs for each trigger, around
    the same triggers: it queues exactly one event, of the batch that settled."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    job, batches = queued_job(conn, 10)
    other = support.connect(DB)

    async def scenario():
        runner = TriggerRunner()
        for i, batch in enumerate(batches):
            runner.triggers[i] = {"task": asyncio.create_task(runner.run_trigger(i, trigger_of(batch))),
                                  "name": f"process batch {batch.batch_no}", "events": 0, "is_watcher": False}
        await asyncio.sleep(POLL * 3)
        await in_thread(complete, other, batches[3].batch_id)
        await asyncio.wait_for(runner.triggers[3]["task"], timeout=5)
        await asyncio.sleep(POLL * 3)
        open_ = [i for i, t in runner.triggers.items() if not t["task"].done()]
        for details in runner.triggers.values():
            details["task"].cancel()
        await asyncio.gather(*(d["task"] for d in runner.triggers.values()), return_exceptions=True)
        return list(runner.events), open_

    try:
        events, open_ = asyncio.run(scenario())
    finally:
        other.close()
    assert [(e.trigger_id, e.event.payload["settled"]) for e in events] == [(3, "completed")]
    assert open_ == [i for i in range(len(batches)) if i != 3]
    assert {job_id for job_id, _ in polls} == {job.job_id} and len(polls) <= 12
