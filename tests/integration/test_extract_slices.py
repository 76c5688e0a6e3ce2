"""The extract cut into time slices, each its own task: together they track exactly what one scan would,
each resumes alone, a changed slice count starts over cleanly, and an upgraded database keeps its
checkpoints. Real Elasticsearch and MariaDB; the DAG run is a real dag.test()."""

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from elastic_transport import ConnectionError as TransportConnectionError

import support
from es_export import pipeline, tracking
from es_export.config import ExportConfig, RunParams
from es_export.errors import ExtractIncomplete
from es_export.tracking import schema
from seed_data import SeedConfig
from support import connect, new_tracking_database, run_dag

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=600, days=3, start=date(2025, 3, 1), seed=23, large=0)
DB = "tracking_test_slices"
DAY = datetime(2025, 3, 2, tzinfo=UTC)
# Three slices of DAY end and start at 08:00 and 16:00; documents sit on and next to those edges.
EDGES = [DAY, DAY + timedelta(hours=8), DAY + timedelta(hours=16), DAY + timedelta(days=1)]
EDGE_DOCS = {
    "edge-first-ms": DAY,
    "edge-before-8": EDGES[1] - timedelta(milliseconds=1),
    "edge-at-8": EDGES[1],
    "edge-at-8-twin": EDGES[1],
    "edge-before-16": EDGES[2] - timedelta(milliseconds=1),
    "edge-at-16": EDGES[2],
    "edge-last-ms": EDGES[3] - timedelta(milliseconds=1),
    "edge-next-day": EDGES[3],
}


@pytest.fixture(scope="module")
def env(es, s3, airflow_db, module_monkeypatch):
    with support.own_indices(es, SEED, "sl") as indices:
        for doc_id, ts in EDGE_DOCS.items():
            es.index(index=indices["messages_index"], id=doc_id,
                     document={"message_id": doc_id, "timestamp": ts.isoformat().replace("+00:00", "Z")})
        es.indices.refresh(index=indices["messages_index"])
        cfg = {**indices, "bucket": f"slices-{uuid.uuid4().hex[:8]}", "scan_page_size": 20, "insert_chunk_size": 20}
        s3.create_bucket(Bucket=cfg["bucket"])
        new_tracking_database(DB).close()
        support.point_airflow_at(module_monkeypatch, cfg, DB)
        yield cfg


@pytest.fixture()
def conn(env):
    """An empty tracking database for each test, so no test sees another's ids."""
    conn = new_tracking_database(DB)
    yield conn
    conn.close()


def es_ids(es, env, start, end):
    hits = es.search(index=env["messages_index"], size=10000, source=False,
                     query={"range": {"timestamp": {"gte": start.isoformat(), "lt": end.isoformat()}}})["hits"]["hits"]
    return {h["_id"] for h in hits}


def new_job(conn, start=DAY, end=DAY + timedelta(days=1), slices=1):
    params = RunParams(start=start, end=end, batch_size=1000, extract_slices=slices)
    return pipeline.open_job(conn, dag_id="t", run_id=f"slices-{uuid.uuid4().hex[:8]}", params=params)


def tracked_ids(job):
    return {r[0] for r in support.query(DB, "SELECT message_id FROM message_tracking WHERE run_id = %s", job.run_id)}


def extract_in_parallel(es, env, job, count, client=None):
    """Every slice at once, each on its own connection, the way mapped tasks on several workers run."""
    results, errors = {}, {}

    def run(part):
        conn = connect(DB)
        try:
            results[part.no] = pipeline.extract(client or es, conn, ExportConfig(**env), job, part)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors[part.no] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in pipeline.slices_of(job, count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


class CrashesInSlice:
    """The real client; the scan of the slice starting at `start` fails after `pages` pages."""

    def __init__(self, es, start, pages):
        self._es, self.start, self.pages, self.served = es, f"'gte': '{start.isoformat()}'", pages, 0
        self._lock = threading.Lock()

    def search(self, **kw):
        query = str(kw.get("query") or kw.get("body", {}))
        if self.start in query:
            with self._lock:
                self.served += 1
                if self.served > self.pages:
                    raise TransportConnectionError("connection reset by peer (simulated crash of one worker)")
        return self._es.search(**kw)

    def __getattr__(self, name):
        return getattr(self._es, name)


def test_slices_together_track_exactly_what_the_interval_holds(env, es, conn):
    job = new_job(conn, slices=3)
    results, errors = extract_in_parallel(es, env, job, 3)
    assert errors == {}
    expected = es_ids(es, env, EDGES[0], EDGES[3])
    assert "edge-next-day" not in expected and len(expected) > 150
    assert tracked_ids(job) == expected
    # Each document counted in exactly one slice: the one whose range holds its timestamp.
    for no in range(3):
        assert results[no].ids_found == len(es_ids(es, env, EDGES[no], EDGES[no + 1]))
    assert "edge-at-8" in es_ids(es, env, EDGES[1], EDGES[2])
    assert pipeline.finish_extract(conn, job, 3) == (len(expected), len(expected))
    assert support.query(DB, "SELECT ids_found FROM job_runs WHERE id = %s", job.job_id) == ((len(expected),),)


def test_a_crashed_slice_resumes_alone_and_plan_waits_for_it(env, es, conn):
    job = new_job(conn, slices=3)
    crashing = CrashesInSlice(es, EDGES[1], pages=2)
    results, errors = extract_in_parallel(es, env, job, 3, client=crashing)
    assert set(results) == {0, 2} and isinstance(errors[1], TransportConnectionError)
    assert pipeline.unfinished_slices(conn, job, 3) == [2]
    with pytest.raises(ExtractIncomplete, match=r"slice\(s\) \[2\] of 3 \(map index\(es\) \[1\]"):
        pipeline.finish_extract(conn, job, 3)
    saved = tracking.load_checkpoint(conn, job.job_id, pipeline.slices_of(job, 3)[1])
    assert saved is not None and not saved.finished and saved.ids_before > 0
    again = pipeline.extract(es, conn, ExportConfig(**env), job, pipeline.slices_of(job, 3)[1])
    assert again.resumed and again.ids_found == len(es_ids(es, env, EDGES[1], EDGES[2]))
    expected = es_ids(es, env, EDGES[0], EDGES[3])
    assert pipeline.finish_extract(conn, job, 3)[0] == len(expected)
    assert tracked_ids(job) == expected


def test_a_new_slice_count_starts_over_instead_of_trusting_old_checkpoints(env, es, conn):
    job = new_job(conn, slices=2)
    _, errors = extract_in_parallel(es, env, job, 2)
    assert errors == {}
    assert pipeline.finish_extract(conn, job, 2)[0] == len(es_ids(es, env, EDGES[0], EDGES[3]))
    # The run is cleared and rerun with 3 slices: slice 1 and 2 of the old cut must not count.
    assert pipeline.unfinished_slices(conn, job, 3) == [1, 2, 3]
    results, errors = extract_in_parallel(es, env, job, 3)
    assert errors == {} and not any(r.resumed for r in results.values())
    assert pipeline.finish_extract(conn, job, 3)[0] == len(es_ids(es, env, EDGES[0], EDGES[3]))


def test_an_extract_waiting_on_a_lock_tries_the_chunk_again_instead_of_failing(env, es, conn):
    """Another transaction (a sibling slice, a rerun) holds a lock on an id the extract inserts."""
    job = new_job(conn)
    expected = es_ids(es, env, EDGES[0], EDGES[3])
    blocker = connect(DB)
    with blocker.cursor() as cur:
        cur.execute("INSERT INTO message_tracking (message_id, message_ts) VALUES (%s, UTC_TIMESTAMP(6))",
                    (sorted(expected)[len(expected) // 2],))
    release = threading.Timer(2.5, blocker.rollback)  # uncommitted until then: the extract's INSERT waits
    release.start()
    with conn.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
    try:
        result = pipeline.extract(es, conn, ExportConfig(**env), job)
    finally:
        release.join()
        blocker.close()
    assert result.ids_found == result.ids_new == len(expected)
    assert tracked_ids(job) == expected


def test_a_checkpoint_saved_before_the_upgrade_still_resumes(env, es, monkeypatch):
    name = "tracking_test_slices_upgrade"
    support.reset_database(name)
    conn = connect(name)
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] <= 7])
    tracking.migrate(conn)
    job = new_job(conn)
    crashed_at = DAY + timedelta(hours=12)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO extract_checkpoints (job_id, last_ts_ms, ids_before, ids_new, finished)"
                    " VALUES (%s, %s, %s, %s, FALSE)", (job.job_id, int(crashed_at.timestamp() * 1000), 7, 7))
    conn.commit()
    monkeypatch.undo()
    assert tracking.migrate(conn) == [v for v, _, _ in schema.MIGRATIONS if v > 7]
    result = pipeline.extract(es, conn, ExportConfig(**env), job)
    conn.close()
    assert result.resumed
    # The old row said 7 ids lay below 12:00; the resumed scan adds what lies at and after it.
    assert result.ids_found == 7 + len(es_ids(es, env, crashed_at, EDGES[3]))


def test_the_dag_maps_the_extract_over_its_slices(env, es):
    day = date(2025, 3, 3)
    dr = run_dag("es_message_export", start=day.isoformat(), end="2025-03-04", batch_size=100, extract_slices=4)
    assert dr.state == "success"
    extracts = sorted((ti.map_index, ti.rendered_map_index, ti.state) for ti in dr.get_task_instances()
                      if ti.task_id == "extract")
    assert extracts == [(i, f"slice {i + 1} of 4", "success") for i in range(4)]
    start = datetime(2025, 3, 3, tzinfo=UTC)
    expected = len(es_ids(es, env, start, start + timedelta(days=1)))
    assert support.query(DB, "SELECT ids_found, completed FROM job_runs WHERE run_id = %s",
                         dr.run_id) == ((expected, expected),)
