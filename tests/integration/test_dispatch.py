"""dispatch=local, lambda and sqs export the same day identically; the Lambda handler and its zip.

The Lambda runs in the local stand-in (devstack/lambda_local.py, started by `make up`): the real
handler behind the real Lambda Invoke API and an SQS event source mapping on the S3/SQS server.
"""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest

import seed_data
import support
from es_export import lambda_handler, pipeline
from es_export.config import ExportConfig, RunParams
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=600, days=2, start=date(2025, 1, 10), seed=47, large=1)
DAY = SEED.start
MODES = ("local", "lambda", "sqs")


@pytest.fixture(scope="module")
def indices(es):
    suffix = uuid.uuid4().hex[:8]
    names = {name: f"d-{name}-{suffix}" for name in seed_data.MAPPINGS}
    seed_data.load(es, SEED, index_names=names)
    yield {"messages_index": names["messages"], "history_index": names["message_history"],
           "status_index": names["message_status"], "audit_index": names["message_audit"]}
    es.indices.delete(index=",".join(names.values()))


def database(mode):
    return f"tracking_test_mode_{mode}"


@pytest.fixture(scope="module")
def exports(indices, s3, airflow_db):
    """The same day exported once per dispatch mode, each into its own bucket and tracking database."""
    from airflow.dag_processing.dagbag import DagBag

    saved = {k: os.environ.get(k) for k in ("AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG", "AIRFLOW_CONN_MYSQL_TRACKING",
                                            "ES_EXPORT_POKE_SECONDS")}
    os.environ["ES_EXPORT_POKE_SECONDS"] = "1"  # read when the DAG file is parsed
    dag = DagBag(dag_folder=str(support.DAGS / "es_message_export.py")).dags["es_message_export"]
    runs = {}
    try:
        for mode in MODES:
            bucket = f"mode-{mode}-{uuid.uuid4().hex[:6]}"
            s3.create_bucket(Bucket=bucket)
            support.reset_database(database(mode))
            os.environ["AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG"] = json.dumps({**indices, "bucket": bucket})
            os.environ["AIRFLOW_CONN_MYSQL_TRACKING"] = json.dumps(
                {**json.loads(saved["AIRFLOW_CONN_MYSQL_TRACKING"]), "schema": database(mode)})
            conf = {"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat(), "dispatch": mode,
                    "batch_size": 100}
            runs[mode] = (dag.test(run_conf=conf, logical_date=datetime.now(UTC)), bucket)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return runs


def objects(s3, bucket):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="messages/dt="):
        for obj in page.get("Contents", []):
            doc = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            doc.pop("export")  # job, batch, run and time of the export differ by design
            out[obj["Key"]] = doc
    return out


def tracking_rows(mode):
    return support.query(database(mode), "SELECT message_id, status, attempts, s3_key, last_error"
                                         " FROM message_tracking ORDER BY message_id")


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_succeeds(exports, mode):
    assert exports[mode][0].state == "success"


def test_the_three_modes_write_the_same_objects_and_tracking(exports, s3):
    local = objects(s3, exports["local"][1])
    assert len(local) == sum(1 for _ in seed_data.ids_for_day(SEED, DAY))
    for mode in ("lambda", "sqs"):
        assert objects(s3, exports[mode][1]) == local, mode
        assert tracking_rows(mode) == tracking_rows("local"), mode
        assert support.query(database(mode), "SELECT batch_no, status, total, completed, failed FROM batch_progress"
                             " ORDER BY batch_no") == support.query(
            database("local"), "SELECT batch_no, status, total, completed, failed FROM batch_progress"
                               " ORDER BY batch_no"), mode


def test_sqs_mode_sent_every_batch_through_the_queue(exports):
    rows = support.query(database("sqs"), "SELECT COUNT(*), SUM(dispatched_at IS NOT NULL) FROM batch_progress")
    batches = -(-sum(1 for _ in seed_data.ids_for_day(SEED, DAY)) // 100)
    assert rows[0][0] == batches and int(rows[0][1]) == batches


def lambda_client():
    port = os.environ.get("LAMBDA_PORT", "9001")
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")


def invoke(payload):
    resp = lambda_client().invoke(FunctionName="es-message-export-processor", Payload=json.dumps(payload))
    return resp.get("FunctionError"), json.loads(resp["Payload"].read())


def test_handler_errors_come_back_as_function_errors(exports):
    error, body = invoke({"settings": {}})
    assert error == "Unhandled" and body["errorType"] == "ConfigError" and "has no 'batch'" in body["errorMessage"]
    error, body = invoke({"batch": {"job_id": 1, "batch_id": 987654, "batch_no": 0, "size": 1, "run_id": "x"},
                          "settings": {"tracking_database": database("lambda")}})
    assert error == "Unhandled" and body["errorType"] == "TrackingError"
    assert "batch 987654 does not exist" in body["errorMessage"]


@pytest.fixture()
def fresh_batch(indices, es, s3):
    """A planned, unprocessed batch of the second day in a database of its own."""
    db = "tracking_test_handler"
    support.reset_database(db)
    bucket = f"handler-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    cfg = ExportConfig(**indices, bucket=bucket)
    conn = support.connect(db)
    day = datetime(SEED.start.year, SEED.start.month, SEED.start.day, tzinfo=UTC) + timedelta(days=1)
    params = RunParams(start=day, end=day + timedelta(days=1), batch_size=10_000)
    job = pipeline.open_job(conn, dag_id="t", run_id="handler", params=params)
    pipeline.extract(es, conn, cfg, job)
    (batch,) = pipeline.plan(conn, cfg, job, params)
    conn.close()
    settings = {**indices, "bucket": bucket, "tracking_database": db}
    return {"batch": {**batch.as_dict(), "run_id": job.run_id}, "settings": settings}, db


def test_sqs_event_reports_only_the_failed_records(fresh_batch):
    payload, db = fresh_batch
    bad = {**payload, "batch": {**payload["batch"], "batch_id": 987654}}
    event = {"Records": [{"messageId": "good", "body": json.dumps(payload)},
                         {"messageId": "bad", "body": json.dumps(bad)},
                         {"messageId": "not-json", "body": "{"}]}
    assert lambda_handler.handler(event) == {"batchItemFailures": [{"itemIdentifier": "bad"},
                                                                   {"itemIdentifier": "not-json"}]}
    assert support.query(db, "SELECT status, COUNT(*) FROM message_tracking GROUP BY status") == (
        ("completed", payload["batch"]["size"]),)
    # Idempotent: the same record again exports nothing twice.
    assert lambda_handler.handler({"Records": [{"messageId": "good", "body": json.dumps(payload)}]}) == {
        "batchItemFailures": []}
    assert support.query(db, "SELECT MAX(attempts) FROM message_tracking") == ((1,),)


def test_lambda_zip_runs_its_handler_in_a_clean_virtualenv(fresh_batch, tmp_path):
    payload, db = fresh_batch
    build = subprocess.run(["bash", str(support.ROOT / "deploy" / "build_lambda_zip.sh")], capture_output=True,
                           text=True, check=False)
    assert build.returncode == 0, build.stderr
    zip_path = support.ROOT / "dist" / "lambda.zip"
    code = tmp_path / "task"
    subprocess.run(["unzip", "-q", str(zip_path), "-d", str(code)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # boto3 is the one thing the python3.12 runtime provides; install it as the runtime has it.
    pins = [line for line in (support.ROOT / "requirements" / "dev.lock").read_text().splitlines()
            if line.split("==")[0].lower() in {"boto3", "botocore", "s3transfer", "jmespath", "urllib3",
                                               "python-dateutil", "six"}]
    subprocess.run([py, "-m", "pip", "install", "-q", *pins], check=True)
    script = ("import json, sys\n"
              "try:\n    import airflow\n    sys.exit('airflow must not be importable here')\n"
              "except ImportError:\n    pass\n"
              "from es_export.lambda_handler import handler\n"
              "print(json.dumps(handler(json.loads(sys.argv[1]))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    out = subprocess.run([py, "-c", script, json.dumps(payload)], cwd=code, env={**env, "PYTHONPATH": str(code)},
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["completed"], result["failed"]) == (payload["batch"]["size"], 0)
    assert support.query(db, "SELECT status, COUNT(*) FROM message_tracking GROUP BY status") == (
        ("completed", payload["batch"]["size"]),)
