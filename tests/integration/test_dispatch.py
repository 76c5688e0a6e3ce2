"""dispatch=local, lambda and sqs export the same day identically; the Lambda handler and its zip.

The Lambda runs in local stand-ins (devstack/lambda_local.py): the real handler behind the real
Lambda Invoke API and an SQS event source mapping on the S3/SQS server. The function takes its
configuration from its environment only, so each remote mode gets a function of its own, deployed
(started) with that mode's indices, bucket and tracking database, and Airflow is pointed at it.
"""

import contextlib
import json
import os
import subprocess
import sys
import types
import uuid
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest

import seed_data
import support
from es_export.config import ExportConfig, RunParams
from es_export.errors import ConfigError
from es_export.payload import build_payload
from es_export_lambda import handler as lambda_handler
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=600, days=2, start=date(2025, 1, 10), seed=47, large=1)
DAY = SEED.start
MODES = ("local", "lambda", "sqs")
REMOTE = ("lambda", "sqs")


@pytest.fixture(scope="module")
def indices(es):
    with support.own_indices(es, SEED, "d") as names:
        yield names


def database(mode):
    return f"tracking_test_mode_{mode}"


@pytest.fixture(scope="module")
def buckets(s3):
    """Each mode exports into its own bucket and tracking database."""
    out = {}
    for mode in MODES:
        out[mode] = f"mode-{mode}-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=out[mode])
        support.reset_database(database(mode))
    return out


@pytest.fixture(scope="module")
def functions(indices, buckets):
    """The processing Lambda of each remote mode, configured (EXPORT_CONFIG, MYSQL_DB) for that mode."""
    with contextlib.ExitStack() as stack:
        yield {mode: stack.enter_context(support.local_lambda(
            f"es-export-{mode}", export_config={**indices, "bucket": buckets[mode]}, database=database(mode)))
            for mode in REMOTE}


@pytest.fixture(scope="module")
def exports(indices, buckets, functions, airflow_db):
    """The same day exported once per dispatch mode; Airflow's Variable names the mode's function.

    Also which job ids the sqs waits' trigger polled during each mode's run (dag.test runs a deferred
    task's trigger in line, as the triggerer would)."""
    from es_export_airflow import triggers

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ES_EXPORT_POKE_SECONDS", "1")  # read when the DAG file is parsed
        polled: list[int] = []
        real_poll = triggers.progress_of_job
        mp.setattr(triggers, "progress_of_job", lambda conn, job_id: polled.append(job_id) or real_poll(conn, job_id))
        dag = support.parse_dag("es_message_export")
        for mode in MODES:
            config = {**indices, "bucket": buckets[mode]}
            if mode in functions:
                config.update(functions[mode].airflow_config())
                mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", functions[mode].aws_connection())
            if mode == "sqs":  # batches become visible to the Lambda after the first pokes: those must defer
                sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
                sqs.set_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=functions[mode].queue)["QueueUrl"],
                                         Attributes={"DelaySeconds": "4"})
            support.point_airflow_at(mp, config, database(mode))
            conf = {"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat(), "dispatch": mode,
                    "batch_size": 100}
            del polled[:]
            runs[mode] = (dag.test(run_conf=conf, logical_date=datetime.now(UTC)), buckets[mode], list(polled))
    return runs


def objects(s3, bucket):
    out = {}
    for key in support.s3_keys(s3, bucket, "messages/dt="):
        doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        doc.pop("export")  # job, batch, run and time of the export differ by design
        out[key] = doc
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


def test_only_sqs_mode_waits_deferred_in_the_trigger(exports):
    """Each sqs batch that was not done at its first poke deferred to BatchesSettledTrigger, which
    polled the run's job and resumed the task (which then succeeded); local and lambda never defer."""
    (job_id,), = support.query(database("sqs"), "SELECT id FROM job_runs WHERE run_id = %s", exports["sqs"][0].run_id)
    assert exports["sqs"][2] and set(exports["sqs"][2]) == {job_id}
    assert exports["local"][2] == exports["lambda"][2] == []
    mapped = [ti for ti in exports["sqs"][0].get_task_instances() if ti.task_id == "process"]
    assert mapped and all(ti.state == "success" and ti.try_number == 1 for ti in mapped)
    # The queue delays each message 4 s, more than the plan takes to reach the first poke.
    assert exports["sqs"][2].count(job_id) >= 2


def invoke(function, payload):
    client = boto3.client("lambda", endpoint_url=function.url, region_name="us-east-1")
    resp = client.invoke(FunctionName=function.function, Payload=json.dumps(payload))
    return resp.get("FunctionError"), json.loads(resp["Payload"].read())


MISSING_BATCH = {"job_id": 1, "batch_id": 987654, "batch_no": 0, "size": 1, "run_id": "x"}


def test_handler_errors_come_back_as_function_errors(exports, functions):
    fn = functions["lambda"]
    error, body = invoke(fn, {})
    assert error == "Unhandled" and body["errorType"] == "ConfigError" and "has no 'batch'" in body["errorMessage"]
    # Accepted, then looked up in the function's own database (a TrackingError of some kind).
    error, body = invoke(fn, {"batch": MISSING_BATCH})
    assert error == "Unhandled" and body["errorType"] != "ConfigError"
    assert "batch 987654 does not exist in batch_progress" in body["errorMessage"]


def test_the_function_refuses_settings_in_the_payload(exports, functions):
    error, body = invoke(functions["lambda"], {"batch": MISSING_BATCH, "settings": {
        "tracking_database": database("local"), "messages_index": "anything-it-can-read"}})
    assert error == "Unhandled" and body["errorType"] == "ConfigError"
    assert ("does not accept: ['settings.messages_index', 'settings.tracking_database']"
            in body["errorMessage"])


def test_the_function_refuses_what_airflow_does_not_expect(exports, functions, buckets):
    fn = functions["lambda"]
    error, body = invoke(fn, {"batch": MISSING_BATCH, "expect": {"bucket": "elsewhere"}})
    assert error == "Unhandled" and body["errorType"] == "ConfigError"
    assert body["errorMessage"] == (
        f"the configuration of {fn.function} differs from Airflow's: bucket: the function has "
        f"'{buckets['lambda']}', Airflow expects 'elsewhere'. Set EXPORT_CONFIG in the environment of "
        f"{fn.function} (or change the Variable es_message_export_config / the mysql_tracking connection) "
        "so they agree. Nothing was exported")


def test_airflow_reports_a_function_configured_otherwise(exports, functions, indices, monkeypatch):
    """The DAG's own invoke path: a Variable that names another bucket fails the batch, naming both,
    without retries (a ConfigError: retrying cannot make them agree)."""
    from es_export.errors import ConfigError
    from es_export_airflow import dispatch

    fn = functions["lambda"]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", fn.aws_connection())
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", support.mysql_connection("tracking_elsewhere"))
    cfg = ExportConfig(**indices, bucket="elsewhere", **fn.airflow_config())
    with pytest.raises(ConfigError) as err:
        dispatch.invoke_lambda(cfg, MISSING_BATCH)
    assert f"Lambda {fn.function} refused batch" in str(err.value)
    assert "bucket: the function has 'mode-lambda-" in str(err.value)
    assert (f"tracking_database: the function has '{database('lambda')}', Airflow expects 'tracking_elsewhere'"
            in str(err.value))
    assert "Set EXPORT_CONFIG and MYSQL_DB in the environment of" in str(err.value)


@pytest.fixture()
def fresh_batch(indices, es, s3, monkeypatch):
    """A planned, unprocessed batch of the second day in a database of its own.

    This process gets the environment of a function configured for it (EXPORT_CONFIG, MYSQL_DB),
    for the handler called in-process.
    """
    db = "tracking_test_handler"
    support.reset_database(db)
    bucket = f"handler-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    cfg = ExportConfig(**indices, bucket=bucket)
    conn = support.connect(db)
    day = datetime(SEED.start.year, SEED.start.month, SEED.start.day, tzinfo=UTC) + timedelta(days=1)
    params = RunParams(start=day, end=day + timedelta(days=1), batch_size=10_000)
    job, batch = support.one_batch(es, conn, cfg, params, dag_id="t", run_id="handler")
    conn.close()
    monkeypatch.setenv("EXPORT_CONFIG", json.dumps({**indices, "bucket": bucket}))
    monkeypatch.setenv("MYSQL_DB", db)
    payload = build_payload(cfg, {**batch.as_dict(), "run_id": job.run_id}, tracking_database=db)
    return types.SimpleNamespace(payload=payload, db=db, bucket=bucket, size=batch.size)


def assert_nothing_exported(s3, batch):
    assert s3.list_objects_v2(Bucket=batch.bucket).get("KeyCount", 0) == 0
    assert support.query(batch.db, "SELECT status, MAX(attempts) FROM message_tracking GROUP BY status") == (
        ("pending", 0),)
    assert support.query(batch.db, "SELECT status, attempts FROM batch_progress") == (("pending", 0),)


def test_an_override_in_the_payload_exports_nothing(fresh_batch, indices, s3):
    """Whoever can send to the queue cannot point the function at another index or database."""
    bad = {**fresh_batch.payload, "settings": {"messages_index": indices["audit_index"], "tracking_database": "x"}}
    with pytest.raises(ConfigError, match=r"does not accept: \['settings.messages_index', "
                                          r"'settings.tracking_database'\]"):
        lambda_handler.handler(bad)
    assert lambda_handler.handler({"Records": [{"messageId": "m", "body": json.dumps(bad)}]}) == {
        "batchItemFailures": [{"itemIdentifier": "m"}]}
    assert_nothing_exported(s3, fresh_batch)


def test_an_unexpected_configuration_exports_nothing(fresh_batch, s3):
    other = {**fresh_batch.payload, "expect": {**fresh_batch.payload["expect"], "prefix": "other"}}
    with pytest.raises(ConfigError, match=r"prefix: the function has 'messages', Airflow expects 'other'\. "
                                          r"Set EXPORT_CONFIG in the environment of "):
        lambda_handler.handler(other)
    assert_nothing_exported(s3, fresh_batch)
    result = lambda_handler.handler(fresh_batch.payload)
    assert (result["completed"], result["failed"]) == (fresh_batch.size, 0)


def test_sqs_event_reports_only_the_failed_records(fresh_batch):
    payload, db = fresh_batch.payload, fresh_batch.db
    # A batch the plan no longer has (the run was cleared and re-planned): a redelivery cannot help,
    # so it is dropped with a warning instead of cycling to the dead-letter queue.
    gone = {**payload, "batch": {**payload["batch"], "batch_id": 987654}}
    event = {"Records": [{"messageId": "good", "body": json.dumps(payload)},
                         {"messageId": "gone", "body": json.dumps(gone)},
                         {"messageId": "not-json", "body": "{"}]}
    assert lambda_handler.handler(event) == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}
    assert support.query(db, "SELECT status, COUNT(*) FROM message_tracking GROUP BY status") == (
        ("completed", payload["batch"]["size"]),)
    # Idempotent: the same record again exports nothing twice.
    assert lambda_handler.handler({"Records": [{"messageId": "good", "body": json.dumps(payload)}]}) == {
        "batchItemFailures": []}
    assert support.query(db, "SELECT MAX(attempts) FROM message_tracking") == ((0,),)  # no failure since the export


def test_lambda_zip_runs_its_handler_in_a_clean_virtualenv(fresh_batch, tmp_path):
    payload, db = fresh_batch.payload, fresh_batch.db
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
              "from es_export_lambda.handler import handler\n"
              "print(json.dumps(handler(json.loads(sys.argv[1]))))\n")
    # The function's environment (EXPORT_CONFIG and MYSQL_DB from fresh_batch) without Airflow's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    out = subprocess.run([py, "-c", script, json.dumps(payload)], cwd=code, env={**env, "PYTHONPATH": str(code)},
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["completed"], result["failed"]) == (payload["batch"]["size"], 0)
    assert support.query(db, "SELECT status, COUNT(*) FROM message_tracking GROUP BY status") == (
        ("completed", payload["batch"]["size"]),)
