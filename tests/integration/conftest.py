"""Session-scoped clients of the real local stack. A missing service is a failure, never a skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _require(name: str) -> str:
    from support import require_env

    return require_env(name)


@pytest.fixture()
def alert_queue():
    """A fresh SNS topic with an SQS queue subscribed to it: (topic ARN, SQS client, queue URL); read
    what was published with support.sns_messages."""
    import uuid

    import boto3

    endpoint = _require("AWS_ENDPOINT_URL")
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:6]}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    yield topic, sqs, queue_url
    sqs.delete_queue(QueueUrl=queue_url)
    sns.delete_topic(TopicArn=topic)


@pytest.fixture(scope="module")
def module_monkeypatch():
    """`monkeypatch` for module-scoped fixtures: undone when the module's tests are done."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's own metadata database (SQLite under .local/airflow), migrated once per session."""
    out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True,
                         text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{out.stdout}\n{out.stderr}")


@pytest.fixture(scope="session")
def running_airflow(es, s3):
    """`airflow standalone` on port 8180 with its own tracking database, indices and bucket.

    Also listening: a StatsD socket for the metrics, and an SQS queue subscribed to the alert topic.
    Every run of this Airflow misses its 5 s deadline, on purpose.
    """
    import types
    import uuid
    from datetime import date

    import boto3

    import running_airflow as ra
    import seed_data
    from support import local_lambda, mysql_connection, new_tracking_database, seed_indices

    new_tracking_database(ra.TRACKING_DB).close()
    cfg = ra.CONFIG
    seed = seed_data.SeedConfig(messages=900, days=3, start=date(2024, 10, 1), seed=23, large=0)
    seed_indices(es, cfg, seed)
    s3.create_bucket(Bucket=cfg["bucket"])
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    alerts_queue = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=alerts_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    sns.create_topic(Name=ra.ALERT_TOPIC.rsplit(":", 1)[1])
    sns.subscribe(TopicArn=ra.ALERT_TOPIC, Protocol="sqs", Endpoint=queue_arn)
    statsd = ra.StatsdListener(ra.STATSD_PORT)
    # Its own processing Lambda (dispatch=lambda and sqs), configured like this Airflow's Variable.
    with local_lambda("airflow-test", export_config=cfg, database=ra.TRACKING_DB) as function:
        config = {**cfg, **function.airflow_config()}
        try:
            ra.start_fresh(mysql_connection(ra.TRACKING_DB), config=config, aws_conn_json=function.aws_connection())
        except RuntimeError as exc:
            statsd.close()
            pytest.fail(str(exc))
        yield types.SimpleNamespace(api=ra.AirflowAPI().login(), statsd=statsd, sqs=sqs, alerts_queue=alerts_queue,
                                    seed=seed, config=config, db=ra.TRACKING_DB, function=function)
        statsd.close()
        ra.airflow_sh("down", "test")
