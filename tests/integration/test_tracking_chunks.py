"""Claims and cuts in bounded chunks (issue 15) on the real MariaDB: with chunks of a few rows they
decide every message exactly as one statement would, and no statement changes more rows than a chunk.

Rows are written directly in the state each case needs; the chunk sizes are tiny so that a handful
of messages spans many chunks (and several rows share one timestamp).
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import support
from es_export import tracking
from es_export.model import Job

pytestmark = pytest.mark.integration

DB = "tracking_test_chunks"
DAY = datetime(2025, 5, 1, tzinfo=UTC)
CLAIM = "UPDATE message_tracking FORCE INDEX (ix_message_tracking_ts) SET job_id"
RETRY_CLAIM = "UPDATE message_tracking SET attempts = IF"
CUT = "UPDATE message_tracking SET batch_id = %s"


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


def open_job(conn, *, status="running", dag_id="es_message_export", start=DAY, end=DAY + timedelta(days=1)) -> Job:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (dag_id, run_id, interval_start, interval_end, next_run_date, status)"
                    " VALUES (%s, %s, %s, %s, %s, %s)", (dag_id, run_id, start.replace(tzinfo=None),
                                                         end.replace(tzinfo=None), end.replace(tzinfo=None), status))
        job_id = cur.lastrowid
    conn.commit()
    return Job(job_id, dag_id, run_id, start, end)


def add(conn, label, n, *, status="pending", job=None, extracted_by=None, lease_minutes=None, due_minutes=None,
        at=DAY + timedelta(hours=1), same_time=1):
    """n messages `label-NN`, a second apart (`same_time` of them share each second)."""
    by = extracted_by or job
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO message_tracking (message_id, message_ts, status, job_id, dag_id, run_id, lease_expires_at,"
            " next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s,"
            " IF(%s IS NULL, NULL, UTC_TIMESTAMP(6) + INTERVAL %s MINUTE),"
            " IF(%s IS NULL, NULL, UTC_TIMESTAMP(6) + INTERVAL %s MINUTE))",
            [(f"{label}-{i:02d}", (at + timedelta(seconds=i // same_time)).replace(tzinfo=None), status,
              job.job_id if job and not extracted_by else None, by.dag_id if by else None,
              by.run_id if by else None, lease_minutes, lease_minutes or 0, due_minutes, due_minutes or 0)
             for i in range(n)])
    conn.commit()


def owners(conn) -> dict[str, tuple]:
    """label -> the set of (job id, status) its messages have."""
    with conn.cursor() as cur:
        cur.execute("SELECT SUBSTRING_INDEX(message_id, '-', 1), job_id, status FROM message_tracking")
        found: dict[str, set] = {}
        for label, job_id, status in cur.fetchall():
            found.setdefault(label, set()).add((job_id, status))
    conn.commit()
    return {label: tuple(sorted(v, key=str)) for label, v in found.items()}


def an_interval_of_every_kind(conn):
    """The jobs, and rows of the day in every state a claim must decide about."""
    me, other, dead = open_job(conn), open_job(conn), open_job(conn, status="failed")
    kinds = [  # label, count, how the rows stand, how many share each timestamp
        ("free", 5, {"extracted_by": dead}, 3),                       # extracted by a run that died
        ("mine", 7, {"extracted_by": me}, 4),                         # extracted by this run, not planned yet
        ("othersextract", 3, {"extracted_by": other}, 1),             # another live run extracted them
        ("othersclaim", 3, {"job": other}, 1),                        # another live run claimed them
        ("failed", 4, {"status": "failed", "job": dead}, 1),
        ("failedother", 2, {"status": "failed", "job": other}, 1),    # another live run still holds them
        ("expired", 2, {"status": "running", "job": other, "lease_minutes": -5}, 1),
        ("leased", 2, {"status": "running", "job": other, "lease_minutes": 30}, 1),
        ("minerunning", 2, {"status": "running", "job": me, "lease_minutes": 30}, 1),  # this job's earlier attempt
        ("completed", 3, {"status": "completed", "job": dead}, 1),
    ]
    for minute, (label, n, state, same_time) in enumerate(kinds):
        add(conn, label, n, at=DAY + timedelta(hours=1, minutes=minute), same_time=same_time, **state)
    add(conn, "yesterday", 2, extracted_by=dead, at=DAY - timedelta(hours=2))
    add(conn, "tomorrow", 2, extracted_by=dead, at=DAY + timedelta(days=1))
    return me, other, dead


@pytest.mark.parametrize("reprocess", [False, True], ids=["only-what-is-left", "reprocess"])
def test_a_claim_in_tiny_chunks_decides_every_message_as_one_statement(conn, reprocess):
    me, other, dead = an_interval_of_every_kind(conn)
    counting = support.CountingRows(conn, CLAIM)

    claimed = tracking.claim_for_job(counting, me, reprocess=reprocess, chunk_rows=2)

    taken = {"free", "mine", "failed", "expired", "minerunning"} | ({"completed"} if reprocess else set())
    left = {"othersextract": ((None, "pending"),), "othersclaim": ((other.job_id, "pending"),),
            "failedother": ((other.job_id, "failed"),), "leased": ((other.job_id, "running"),),
            "completed": ((dead.job_id, "completed"),), "yesterday": ((None, "pending"),),
            "tomorrow": ((None, "pending"),)}
    expected = {label: ((me.job_id, "pending"),) for label in taken} | {k: v for k, v in left.items()
                                                                         if k not in taken}
    assert owners(conn) == expected
    assert claimed == 5 + 7 + 4 + 2 + 2 + (3 if reprocess else 0)
    assert len(counting.counted) > 10 and max(counting.counted) <= 2 + 2  # 4 "mine" rows share a second
    # Once more (a retried plan): nothing new, nothing lost, and the same messages still to batch.
    again = support.CountingRows(conn, CLAIM)
    assert tracking.claim_for_job(again, me, reprocess=False, chunk_rows=2) == claimed
    assert sum(again.counted) == 0  # what the job holds already is not written again
    assert owners(conn) == expected


def test_more_rows_at_one_timestamp_than_a_chunk_are_claimed_together(conn):
    me = open_job(conn)
    add(conn, "same", 9, extracted_by=me, same_time=9)
    add(conn, "after", 3, extracted_by=me, at=DAY + timedelta(hours=2))
    counting = support.CountingRows(conn, CLAIM)
    assert tracking.claim_for_job(counting, me, reprocess=False, chunk_rows=2) == 12
    assert 9 in counting.counted and max(counting.counted) == 9


def test_a_plan_cuts_batches_larger_than_a_chunk_in_several_transactions(conn):
    me = open_job(conn)
    add(conn, "m", 25, extracted_by=me)
    assert tracking.claim_for_job(conn, me, reprocess=False) == 25
    counting = support.CountingRows(conn, CUT)

    batches = tracking.plan_batches(counting, me, batch_size=10, chunk_rows=4)

    assert [(b.batch_no, b.size) for b in batches] == [(0, 10), (1, 10), (2, 5)]
    assert counting.counted == [4, 4, 2, 4, 4, 2, 4, 1]
    assert support.query(DB, "SELECT batch_no, total FROM batch_progress ORDER BY batch_no") == ((0, 10), (1, 10),
                                                                                                  (2, 5))
    assert support.query(DB, "SELECT batch_id, COUNT(*) FROM message_tracking GROUP BY batch_id ORDER BY batch_id"
                         ) == tuple((b.batch_id, b.size) for b in batches)
    # A rerun of the plan (its claim first) replaces the unfinished batches and cuts them again.
    assert tracking.claim_for_job(conn, me, reprocess=False) == 25
    again = tracking.plan_batches(conn, me, batch_size=20, chunk_rows=3)
    assert [(b.batch_no, b.size) for b in again] == [(0, 20), (1, 5)]
    assert support.query(DB, "SELECT COUNT(*) FROM batch_progress") == ((2,),)


def test_a_retry_claim_in_chunks_takes_at_most_its_limit_lowest_ids_first(conn):
    live, dead = open_job(conn), open_job(conn, status="failed")
    add(conn, "due", 12, status="failed", job=dead)
    add(conn, "later", 3, status="failed", job=dead, due_minutes=30)       # backoff not over yet
    add(conn, "orphan", 4, extracted_by=dead)                              # pending, its run died
    add(conn, "held", 3, extracted_by=live)                                # pending, its run is live
    add(conn, "dead", 2, status="dead", job=dead)
    first = open_job(conn, dag_id="es_message_retry", start=datetime(1970, 1, 1, tzinfo=UTC), end=DAY.replace(
        year=2030))
    counting = support.CountingRows(conn, RETRY_CLAIM)

    assert tracking.claim_failed(counting, first, limit=10, chunk_rows=3) == 10

    assert counting.counted == [3, 3, 3, 1]
    with conn.cursor() as cur:
        cur.execute("SELECT message_id FROM message_tracking WHERE job_id = %s ORDER BY id", (first.job_id,))
        assert [r[0] for r in cur.fetchall()] == [f"due-{i:02d}" for i in range(10)]
    conn.commit()
    tracking.update_job(conn, first.job_id, status="failed")  # that retry run ended
    second = open_job(conn, dag_id="es_message_retry", start=first.start, end=first.end)
    assert tracking.claim_failed(conn, second, chunk_rows=3) == 10 + 2 + 4  # its own 10 too: the first died
    assert tracking.claim_failed(conn, second, chunk_rows=3) == 0  # what it holds is not taken twice
    assert owners(conn) == {"due": ((second.job_id, "pending"),), "orphan": ((second.job_id, "pending"),),
                            "later": ((dead.job_id, "failed"),), "held": ((None, "pending"),),
                            "dead": ((dead.job_id, "dead"),)}
    assert tracking.claim_failed(conn, second, revive_dead=True, chunk_rows=1) == 2
