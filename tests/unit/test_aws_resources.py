"""devstack/aws_resources.py: the bucket, queue and topic of the local stacks (make up, docker compose)."""

import json

import pytest
from moto import mock_aws

import aws_resources
from es_export.config import ExportConfig

pytestmark = pytest.mark.unit


@pytest.fixture
def aws(monkeypatch):
    """moto in this process, whatever endpoint the stack's settings name."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def test_defaults_are_the_export_configs():
    cfg = ExportConfig()
    assert (aws_resources.BUCKET, aws_resources.QUEUE, aws_resources.MAX_RECEIVE) == (
        cfg.bucket, cfg.sqs_queue_name, cfg.sqs_max_receive)


def test_creates_bucket_queue_with_dead_letter_queue_and_topic(aws):
    import boto3

    made = aws_resources.create()
    made_again = aws_resources.create()  # idempotent: make up and docker compose up run it every time
    assert made == made_again
    assert "message-export" in {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=made["queue"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":es-export-batches-dlq")
    assert int(redrive["maxReceiveCount"]) == 3
    assert made["topic"].endswith(":es-export-alerts")


def test_command_line(aws, capsys):
    aws_resources.main(["--bucket", "other-bucket", "--queue", "other-queue"])
    out = capsys.readouterr().out
    assert "s3://other-bucket" in out and "other-queue" in out and "other-queue-dlq" in out
