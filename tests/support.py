"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

import seed_data

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
# The configuration keys that name the four indices, and the seed data's own name for each.
INDEX_KEYS = {"messages_index": seed_data.MESSAGES_INDEX, "history_index": seed_data.HISTORY_INDEX,
              "status_index": seed_data.STATUS_INDEX, "audit_index": seed_data.AUDIT_INDEX}
CONFIG_VARIABLE = "AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG"


def require_env(name: str) -> str:
    """A setting of the local stack; the test fails (never skips) when the stack is not up."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: start the local stack with `make up` (it writes .local/stack.env)")
    return value


def connect(database: str | None = None):
    """mysqlclient, as Airflow's MySqlHook uses, to the stack's tracking server."""
    from es_export import clients

    return clients.mysql(clients.MySQLSettings.from_env(database=database), driver="mysqldb")


def reset_database(name: str) -> None:
    """An empty tracking database of the given name (the user may create databases named *_test)."""
    conn = connect(os.environ["MYSQL_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


def query(database: str, sql: str, *params):
    """All rows of one statement, on a connection of its own."""
    conn = connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def new_tracking_database(name: str):
    """An empty tracking database of the given name, migrated; returns an open connection to it."""
    from es_export import tracking

    reset_database(name)
    conn = connect(name)
    tracking.migrate(conn)
    return conn


class CountingRows:
    """A DB-API connection that notes how many rows each statement starting with `prefix` changed
    (`counted`), so a test sees how large each of a function's statements was."""

    def __init__(self, conn, prefix: str):
        self._conn, self.prefix, self.counted = conn, prefix.upper(), []

    def cursor(self):
        return _CountingCursor(self._conn.cursor(), self)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _CountingCursor:
    def __init__(self, cur, counter: CountingRows):
        self._cur, self._counter = cur, counter

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._cur.close()

    def execute(self, sql, params=None):
        result = self._cur.execute(sql, params)
        if " ".join(sql.split()).upper().startswith(self._counter.prefix):
            self._counter.counted.append(self._cur.rowcount)
        return result

    def __getattr__(self, name):
        return getattr(self._cur, name)


def seed_indices(es, indices: dict, seed: seed_data.SeedConfig, *, recreate: bool = True) -> None:
    """Sample data into the four indices a config names (its messages_index, history_index, ...)."""
    seed_data.load(es, seed, recreate=recreate,
                   index_names={default: indices[key] for key, default in INDEX_KEYS.items()})


@contextlib.contextmanager
def own_indices(es, seed: seed_data.SeedConfig, tag: str) -> Generator[dict[str, str], None, None]:
    """Four indices of the caller's own, seeded: yields the config keys naming them, deletes them on exit."""
    suffix = uuid.uuid4().hex[:8]
    indices = {key: f"{tag}-{default}-{suffix}" for key, default in INDEX_KEYS.items()}
    seed_indices(es, indices, seed)
    try:
        yield indices
    finally:
        es.indices.delete(index=",".join(indices.values()), ignore_unavailable=True)


def mysql_connection(database: str) -> str:
    """AIRFLOW_CONN_MYSQL_TRACKING of the stack, pointed at another tracking database."""
    return json.dumps({**json.loads(os.environ["AIRFLOW_CONN_MYSQL_TRACKING"]), "schema": database})


def point_airflow_at(mp: pytest.MonkeyPatch, config: dict, database: str) -> None:
    """Airflow's Variable es_message_export_config and its mysql_tracking connection, through `mp`."""
    mp.setenv(CONFIG_VARIABLE, json.dumps(config))
    mp.setenv("AIRFLOW_CONN_MYSQL_TRACKING", mysql_connection(database))


@contextlib.contextmanager
def config_changed(config: dict, **changes) -> Generator[None, None, None]:
    """The Variable es_message_export_config with `changes`, for the block; as before after it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CONFIG_VARIABLE, json.dumps({**config, **changes}))
        yield


def build_mwaa_bundle(out: Path, *args: str) -> Path:
    """Run deploy/build_mwaa_bundle.py as `make mwaa-bundle` does, into `out` (extra args: the offline variant)."""
    run = subprocess.run([sys.executable, str(ROOT / "deploy" / "build_mwaa_bundle.py"), "--out", str(out), *args],
                         capture_output=True, text=True, check=False, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def parse_dag(dag_id: str):
    """The DAG of dags/<dag_id>.py as Airflow's DagBag parses it."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / f"{dag_id}.py")).dags[dag_id]


def run_dag(dag_id: str, **conf):
    """One run of the DAG in this process (dag.test) with `conf`; returns its DagRun."""
    return parse_dag(dag_id).test(run_conf=conf, logical_date=datetime.now(UTC))


def s3_keys(s3, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix`, all pages."""
    return [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])]


def one_batch(es, conn, cfg, params, *, run_id: str, dag_id: str = "es_message_export"):
    """What a run's start_job, extract and plan leave for its single mapped task: (job, the one batch)."""
    from es_export import pipeline

    job = pipeline.open_job(conn, dag_id=dag_id, run_id=run_id, params=params)
    pipeline.extract(es, conn, cfg, job)
    (batch,) = pipeline.plan(conn, cfg, job, params)
    return job, batch


def planned_job(conn, batches: int, *, run_id: str, dag_id: str = "es_message_export"):
    """A job whose plan cut `batches` batches of one message each, without Elasticsearch: the ids go
    in as extract writes them, then the run's own claim and cut. Returns (job, batches)."""
    from es_export import pipeline, tracking
    from es_export.config import ExportConfig, RunParams
    from es_export.source import IdHit

    start = datetime(2024, 1, 1, tzinfo=UTC)
    params = RunParams(start=start, end=datetime(2024, 1, 2, tzinfo=UTC), batch_size=1)
    job = pipeline.open_job(conn, dag_id=dag_id, run_id=run_id, params=params)
    tracking.insert_chunk(conn, [IdHit(f"{run_id}-{i}", start) for i in range(batches)], job=job)
    conn.commit()
    cfg = ExportConfig(messages_index="m", history_index="h", status_index="s", audit_index="a", bucket="b",
                       max_batches=max(batches, 1))
    return job, pipeline.plan(conn, cfg, job, params)


@dataclass(frozen=True)
class LocalLambda:
    """A running processing-Lambda stand-in: its function name, its SQS queue, its Invoke endpoint."""

    function: str
    queue: str
    url: str
    log: Path

    def airflow_config(self) -> dict[str, str]:
        """The keys of es_message_export_config that send batches to this function."""
        return {"lambda_function_name": self.function, "sqs_queue_name": self.queue}

    def aws_connection(self) -> str:
        """AIRFLOW_CONN_AWS_DEFAULT with Lambda calls routed here (S3 and SQS stay on the moto server)."""
        conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
        conn.setdefault("extra", {}).setdefault("service_config", {})["lambda"] = {"endpoint_url": self.url}
        return json.dumps(conn)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_lambda(name: str, *, export_config: dict, database: str) -> Generator[LocalLambda, None, None]:
    """A function of its own: devstack/lambda_local.py in a subprocess, with its own port and queue.

    Its environment is what a deployed function has and nothing else (no Airflow settings): the
    function takes its configuration only from there, so a test that exports elsewhere than the
    stack's defaults deploys, in effect, a function configured for it. Always stopped on exit.
    """
    import boto3

    function = f"{name}-{uuid.uuid4().hex[:8]}"
    queue = f"{function}-batches"
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    # As deploy/template.yaml creates it: a dead-letter queue after 3 receives.
    dlq_url = sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})["QueueUrl"]
    env = {key: os.environ[key] for key in (
        "PATH", "ES_URL", "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION") if key in os.environ}
    env.update(MYSQL_DB=database, EXPORT_CONFIG=json.dumps(export_config), PYTHONPATH=str(ROOT / "include"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / ".local" / "logs" / f"lambda-{function}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "devstack" / "lambda_local.py"), "--port", str(port),
                                 "--function", function, "--queue", queue], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, url, log)
        yield LocalLambda(function, queue, url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for url_ in (queue_url, dlq_url):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=url_)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Lambda stand-in exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).ok:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the Lambda stand-in did not answer on {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def black_holed_port(kind: str) -> Generator[int, None, None]:
    """A local TCP port where a MySQL client hangs instead of failing fast.

    "silent": the kernel completes the TCP handshake but nothing ever speaks (no server greeting).
    "backlog_full": the listening socket's queue is full and never accepted, so a connect's SYN is
    dropped and retried by the kernel for minutes, as with a firewall that drops packets.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0 if kind == "backlog_full" else 16)
    port = server.getsockname()[1]
    fillers = []
    try:
        if kind == "backlog_full":
            for _ in range(16):
                filler = socket.socket()
                filler.settimeout(0.3)
                try:
                    filler.connect(("127.0.0.1", port))
                except OSError:  # this one hangs: the queue is full
                    filler.close()
                    break
                fillers.append(filler)
            else:
                raise RuntimeError("could not fill the listening socket's queue")
        elif kind != "silent":
            raise ValueError(f"unknown black hole {kind!r}")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def mysql_connection_at(port: int) -> str:
    """An AIRFLOW_CONN_MYSQL_TRACKING value pointing at a port of 127.0.0.1 (needs no running stack)."""
    return json.dumps({"conn_type": "mysql", "host": "127.0.0.1", "port": port, "login": "tracking",
                       "password": "unused", "schema": "tracking"})


def sns_messages(sqs, queue_url: str) -> list[dict]:
    """Every SNS notification an SQS queue subscribed to a topic holds now ({"Subject", "Message", ...}),
    removed from the queue."""
    found: list[dict] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            return found
        for message in got:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def archived_documents(s3, bucket: str, key: str) -> list[dict]:
    """The documents an object holds, in the JSON layouts' shape whatever its layout: a Parquet row's JSON
    text columns parsed, its export columns gathered under "export"."""
    import gzip
    import json

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if key.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        return [{"message_id": row["message_id"], "message": json.loads(row["message"]),
                 **{section: json.loads(row[section]) for section in ("history", "status", "audit")},
                 "export": {"job_id": row["job_id"], "batch_id": row["batch_id"], "run_id": row["run_id"],
                            "exported_at": row["exported_at"]}}
                for row in pq.read_table(pa.BufferReader(body)).to_pylist()]
    lines = gzip.decompress(body).splitlines() if key.endswith(".gz") else [body]
    return [json.loads(line) for line in lines if line.strip()]
