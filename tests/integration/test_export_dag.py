"""The export DAG run for real (dag.test) against Elasticsearch, MariaDB and the S3 server."""

import json
import uuid
from datetime import date

import pytest

import seed_data
import support
from es_export import sink
from seed_data import SeedConfig
from support import run_dag, s3_keys

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=1500, days=3, start=date(2024, 10, 1), seed=11, large=2)
DAY = date(2024, 10, 2)
PREFIX = "messages"
TEST_DB = "tracking_test"
DAG = "es_message_export"


@pytest.fixture(scope="module")
def env(es, s3, airflow_db, module_monkeypatch):
    """Own indices, bucket and tracking database, so the demo's data never mixes in."""
    with support.own_indices(es, SEED, "t") as indices:
        cfg = {**indices, "bucket": f"export-test-{uuid.uuid4().hex[:8]}", "prefix": PREFIX, "scan_page_size": 300}
        s3.create_bucket(Bucket=cfg["bucket"])
        support.new_tracking_database(TEST_DB).close()
        support.point_airflow_at(module_monkeypatch, cfg, TEST_DB)
        yield cfg


def read_json(s3, bucket, key):
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def query(sql, *params):
    return support.query(TEST_DB, sql, *params)


def day_bounds(day):
    return f"{day.isoformat()}", f"{date.fromordinal(day.toordinal() + 1).isoformat()}"


@pytest.fixture(scope="module")
def first_run(env):
    start, end = day_bounds(DAY)
    return run_dag(DAG, start=start, end=end, batch_size=100)


def expected_ids(day):
    return set(seed_data.ids_for_day(SEED, day))


def test_first_run_succeeds(first_run):
    assert first_run.state == "success"


def test_every_message_of_the_day_and_no_other_is_on_s3(first_run, env, s3):
    keys = s3_keys(s3, env["bucket"], f"{PREFIX}/dt=")
    ids = expected_ids(DAY)
    assert len(ids) > 400
    assert sorted(keys) == sorted(sink.object_key(PREFIX, DAY, i) for i in ids)


def test_awkward_ids_survive_the_key_encoding(first_run, env, s3):
    keys = s3_keys(s3, env["bucket"], sink.day_prefix(PREFIX, DAY))
    decoded = {sink.decode_id(k.rsplit("/", 1)[1][: -len(".json")]) for k in keys}
    assert decoded == expected_ids(DAY)
    assert any("/" in i for i in decoded) and any(not i.isascii() for i in decoded)


def test_each_object_equals_what_elasticsearch_holds(first_run, env, s3, es):
    ids = sorted(expected_ids(DAY))
    sources = {d["_id"]: d["_source"] for d in es.mget(index=env["messages_index"], ids=ids)["docs"]}
    related = {}
    for section, index in (("history", env["history_index"]), ("status", env["status_index"]),
                           ("audit", env["audit_index"])):
        for doc in (h["_source"] for h in es.search(index=index, size=10000,
                                                    query={"terms": {"message_id": ids}})["hits"]["hits"]):
            related.setdefault((section, doc["message_id"]), []).append(doc)
    for mid in ids:
        doc = read_json(s3, env["bucket"], sink.object_key(PREFIX, DAY, mid))
        assert doc["message_id"] == mid
        assert doc["message"] == sources[mid]
        for section in ("history", "status", "audit"):
            want = related.get((section, mid), [])
            assert [d["timestamp"] for d in doc[section]] == sorted(d["timestamp"] for d in want)
            assert sorted(map(json.dumps, doc[section])) == sorted(map(json.dumps, want))
        assert doc["export"]["run_id"] == first_run.run_id


def test_tracking_is_complete_and_batches_add_up(first_run):
    ids = expected_ids(DAY)
    rows = query("SELECT status, COUNT(*) FROM message_tracking WHERE message_ts >= %s AND message_ts < %s"
                 " GROUP BY status", *day_bounds(DAY))
    assert dict(rows) == {"completed": len(ids)}
    (job_id, status, ids_found, completed, failed, objects), = query(
        "SELECT id, status, ids_found, completed, failed, objects FROM job_runs WHERE run_id = %s", first_run.run_id)
    assert (status, ids_found, completed, failed, objects) == ("completed", len(ids), len(ids), 0, len(ids))
    (batches, total, done, bad), = query(
        "SELECT COUNT(*), SUM(total), SUM(completed), SUM(failed) FROM batch_progress WHERE job_id = %s", job_id)
    assert (batches, int(total), int(done), int(bad)) == (-(-len(ids) // 100), len(ids), len(ids), 0)


def test_manifest_is_written_outside_the_data_folders(first_run, env, s3):
    keys = s3_keys(s3, env["bucket"], f"{PREFIX}/_manifests/")
    manifest = read_json(s3, env["bucket"], sink.manifest_key(PREFIX, "es_message_export", first_run.run_id))
    assert len(keys) >= 1
    assert manifest["completed"] == len(expected_ids(DAY)) and manifest["status"] == "completed"


def test_second_run_writes_nothing_and_duplicates_nothing(first_run, env, s3):
    before = {k: s3.head_object(Bucket=env["bucket"], Key=k)["ETag"]
              for k in s3_keys(s3, env["bucket"], f"{PREFIX}/dt=")}
    dr = run_dag(DAG, start=day_bounds(DAY)[0], end=day_bounds(DAY)[1])
    assert dr.state == "success"
    after = s3_keys(s3, env["bucket"], f"{PREFIX}/dt=")
    assert sorted(after) == sorted(before)
    sample = sorted(before)[0]
    assert read_json(s3, env["bucket"], sample)["export"]["run_id"] == first_run.run_id
    (batches, to_export), = query("SELECT batches, to_export FROM job_runs WHERE run_id = %s", dr.run_id)
    assert (batches, to_export) == (0, 0)
    (dupes,) = query("SELECT COUNT(*) - COUNT(DISTINCT message_id) FROM message_tracking")[0]
    assert dupes == 0


def test_reprocess_rewrites_every_object(first_run, env, s3):
    dr = run_dag(DAG, start=day_bounds(DAY)[0], end=day_bounds(DAY)[1], reprocess=True)
    assert dr.state == "success"
    keys = s3_keys(s3, env["bucket"], sink.day_prefix(PREFIX, DAY))
    assert len(keys) == len(expected_ids(DAY))
    assert {read_json(s3, env["bucket"], k)["export"]["run_id"] for k in keys[:50]} == {dr.run_id}


def test_empty_day_succeeds_with_zero_batches(env):
    dr = run_dag(DAG, start="2024-09-01", end="2024-09-02")
    assert dr.state == "success"
    assert query("SELECT status, ids_found, batches FROM job_runs WHERE run_id = %s", dr.run_id) == (
        ("completed", 0, 0),)


def test_more_batches_than_the_limit_still_map_within_it(env):
    with support.config_changed(env, max_batches=4):
        dr = run_dag(DAG, start="2024-10-03", end="2024-10-04", batch_size=1)
    assert dr.state == "success"
    (job_id, batches, to_export), = query("SELECT id, batches, to_export FROM job_runs WHERE run_id = %s", dr.run_id)
    assert to_export == len(expected_ids(date(2024, 10, 3))) and batches == 4
    mapped = [ti for ti in dr.get_task_instances() if ti.task_id == "process"]
    assert len(mapped) == 4 and all(ti.state == "success" for ti in mapped)


def test_bad_params_are_refused_before_any_work(env):
    dr = run_dag(DAG, start="2024-10-03", end="2024-10-01")
    assert dr.state == "failed"
    # The only trace is the listener's mirror of Airflow's verdict: no extract, no batch, no message.
    assert query("SELECT status, airflow_state, ids_found, batches FROM job_runs WHERE run_id = %s",
                 dr.run_id) == (("failed", "failed", None, None),)
    assert query("SELECT COUNT(*) FROM message_tracking WHERE run_id = %s", dr.run_id) == ((0,),)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    # The first task, settle, reads the params: it fails and nothing after it runs.
    assert states["settle"] == "failed" and states["start_job"] == "upstream_failed"
    assert states["extract"] == "upstream_failed"


def test_ndjson_layout_writes_one_gzip_file_per_batch(env, s3):
    import gzip

    bucket = f"{env['bucket']}-ndjson"
    s3.create_bucket(Bucket=bucket)
    day = date(2024, 10, 1)
    with support.config_changed(env, bucket=bucket, layout="ndjson_gzip"):
        dr = run_dag(DAG, start=day.isoformat(), end="2024-10-02", batch_size=200)
    assert dr.state == "success"
    keys = s3_keys(s3, bucket, f"{PREFIX}/dt=")
    ids = expected_ids(day)
    assert len(keys) == -(-len(ids) // 200) and all(k.endswith(".ndjson.gz") for k in keys)
    lines = [json.loads(line) for k in keys
             for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).splitlines()]
    assert sorted(doc["message_id"] for doc in lines) == sorted(ids)


def test_parquet_layout_and_its_glue_table_from_the_dag(env, s3):
    """Two keys set: the run writes Parquet files and its catalog task creates the table over them."""
    import boto3

    bucket = f"{env['bucket']}-parquet"
    s3.create_bucket(Bucket=bucket)
    database = f"analytics_{uuid.uuid4().hex[:8]}"
    day = date(2024, 10, 3)
    with support.config_changed(env, bucket=bucket, layout="parquet", glue_database=database,
                                glue_table="messages"):
        # reprocess: an earlier test of this module exported the day already (into another bucket).
        dr = run_dag(DAG, start=day.isoformat(), end="2024-10-04", batch_size=400, reprocess=True)
    assert dr.state == "success"
    catalog = dr.get_task_instance("catalog")
    assert catalog.state == "success"
    assert catalog.xcom_pull(task_ids="catalog") == {"table": f"{database}.messages", "outcome": "created"}
    keys = s3_keys(s3, bucket, f"{PREFIX}/dt=")
    assert len(keys) == -(-len(expected_ids(day)) // 400) and all(k.endswith(".parquet") for k in keys)
    assert sorted(i for k in keys for i in sink.document_ids(s3, bucket, k)) == sorted(expected_ids(day))
    glue = boto3.client("glue", endpoint_url=support.require_env("AWS_ENDPOINT_URL"), region_name="us-east-1")
    table = glue.get_table(DatabaseName=database, Name="messages")["Table"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{bucket}/{PREFIX}/"
    assert table["Parameters"]["es_export.layout"] == "parquet"


def test_a_parquet_run_through_the_lambda_is_refused_before_any_work(env):
    with support.config_changed(env, layout="parquet"):
        dr = run_dag(DAG, start="2024-10-01", end="2024-10-02", dispatch="lambda")
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["settle"] == "failed" and states["start_job"] == "upstream_failed"
    # The only trace is the listener's mirror of Airflow's verdict: no extract, no batch, no message.
    assert query("SELECT status, ids_found, batches FROM job_runs WHERE run_id = %s", dr.run_id) == (
        ("failed", None, None),)
    assert query("SELECT COUNT(*) FROM message_tracking WHERE run_id = %s", dr.run_id) == ((0,),)
