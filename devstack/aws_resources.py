"""The AWS resources of a local stack, created on the S3/SQS/SNS emulator (moto). Safe to run again.

- the export bucket (the default `bucket` of es_message_export_config),
- the SQS queue of the `sqs` dispatch mode, with a dead-letter queue after 3 receives, as the SAM
  template in deploy/ creates it on AWS,
- the SNS topic late-run and dead-message alerts go to (ES_EXPORT_ALERT_SNS_TOPIC_ARN).

`make up` (devstack/stack.sh) and the init service of docker-compose.yaml both run it. The endpoint
and the credentials come from the environment, as boto3 reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). Needs only boto3: it runs where the
package itself is not importable (the init container has the Airflow image and devstack/, nothing else).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

# The defaults of es_export.config.ExportConfig (bucket, sqs_queue_name, sqs_max_receive); a unit test
# keeps them equal.
BUCKET = "message-export"
QUEUE = "es-export-batches"
MAX_RECEIVE = 3
TOPIC = "es-export-alerts"
VISIBILITY_TIMEOUT_SECONDS = 30


def create(*, bucket: str = BUCKET, queue: str = QUEUE, topic: str = TOPIC, max_receive: int = MAX_RECEIVE,
           session: Any = None) -> dict[str, str]:
    """Create (or keep) the bucket, the queue with its dead-letter queue and the topic; returns where each is."""
    import boto3

    session = session or boto3.session.Session()
    sqs = session.client("sqs")
    dlq_url = sqs.create_queue(QueueName=queue + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=queue, Attributes={
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
    })["QueueUrl"]
    topic_arn = session.client("sns").create_topic(Name=topic)["TopicArn"]
    s3 = session.client("s3")
    # create_bucket answers BucketAlreadyOwnedByYou outside us-east-1 when the bucket exists: ask first.
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        region = session.region_name or "us-east-1"
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **location)
    return {"bucket": f"s3://{bucket}", "queue": queue_url, "dead_letter_queue": dlq_url, "topic": topic_arn}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", default=BUCKET, help=f"export bucket (default {BUCKET})")
    parser.add_argument("--queue", default=QUEUE, help=f"SQS queue of the sqs dispatch mode (default {QUEUE})")
    parser.add_argument("--topic", default=TOPIC, help=f"SNS topic of the alerts (default {TOPIC})")
    parser.add_argument("--max-receive", type=int, default=MAX_RECEIVE,
                        help=f"receives before a message moves to the dead-letter queue (default {MAX_RECEIVE})")
    args = parser.parse_args(argv)
    made = create(bucket=args.bucket, queue=args.queue, topic=args.topic, max_receive=args.max_receive)
    for what, where in made.items():
        print(f"aws: {what:<18} {where}")


if __name__ == "__main__":
    main()
