"""Local stand-ins for AWS Lambda, because moto cannot run Lambda code without Docker.

1. The Lambda Invoke API (`POST /2015-03-31/functions/<name>/invocations`) on 127.0.0.1, running the
   real handler `es_export_lambda.handler.handler` in this process. A handler exception comes back
   as Lambda reports it: HTTP 200, header `X-Amz-Function-Error: Unhandled`, an error payload.
2. An SQS event source mapping: polls a queue of the S3/SQS server, hands up to `--batch-size`
   records to the handler as an SQS event, deletes the records that succeeded and leaves the
   `batchItemFailures` to come back after the visibility timeout (the queue's redrive policy moves
   them to the dead-letter queue after maxReceiveCount receives).

One process is one deployed function: the handler takes its configuration (EXPORT_CONFIG, MYSQL_DB,
ES_URL, ...) from this process's environment only, as in AWS. `make up` starts one with the
defaults; a test that needs other indices, a bucket or a tracking database starts its own
(tests/support.py `local_lambda`) on another port and queue.

    python devstack/lambda_local.py --port 9001 --queue es-export-batches
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from es_export_lambda.handler import handler

log = logging.getLogger("lambda_local")
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


def error_payload(exc: BaseException) -> dict:
    return {"errorMessage": str(exc), "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(exc)[-5:]}


class InvokeHandler(BaseHTTPRequestHandler):
    function_name = "es-message-export-processor"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        match = INVOKE_PATH.match(self.path.split("?")[0])
        if not match:
            self._send(404, {"message": f"no such path {self.path}"})
            return
        name = match.group("name").rsplit(":", 1)[-1]
        if name != self.function_name:
            self._send(404, {"Type": "User", "message": f"Function not found: {name}"},
                       {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            result = handler(json.loads(body or b"{}"), None)
        except Exception as exc:  # noqa: BLE001 - reported to the caller the way Lambda does
            log.warning("invoke failed: %s", exc)
            self._send(200, error_payload(exc), {"X-Amz-Function-Error": "Unhandled"})
            return
        self._send(200, result)

    def do_GET(self) -> None:  # noqa: N802 - health check for the stack script
        self._send(200, {"function": self.function_name, "status": "ok"})

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Amz-Executed-Version", "$LATEST")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s " + fmt, self.address_string(), *args)


def poll_queue(queue_name: str, batch_size: int, visibility_timeout: int, stop: threading.Event) -> None:
    """Behave like an SQS event source mapping with ReportBatchItemFailures."""
    import boto3

    sqs = boto3.client("sqs")
    queue_url = None
    while not stop.is_set():
        try:
            queue_url = queue_url or sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
            resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=batch_size, WaitTimeSeconds=1,
                                       VisibilityTimeout=visibility_timeout, AttributeNames=["All"])
        except Exception as exc:  # noqa: BLE001 - the queue may not exist yet; keep polling
            log.debug("polling %s: %s", queue_name, exc)
            queue_url = None
            stop.wait(1)
            continue
        messages = resp.get("Messages", [])
        if not messages:
            continue
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": m.get("Attributes", {}), "eventSource": "aws:sqs"} for m in messages]}
        try:
            failed = {f["itemIdentifier"] for f in handler(event, None).get("batchItemFailures", [])}
        except Exception as exc:  # noqa: BLE001 - a handler crash fails the whole batch, as in Lambda
            log.warning("SQS batch failed as a whole: %s", exc)
            failed = {m["MessageId"] for m in messages}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)
        log.info("SQS batch of %d: %d done, %d back to the queue", len(messages), len(done), len(failed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LAMBDA_PORT", "9001")))
    parser.add_argument("--function", default="es-message-export-processor")
    parser.add_argument("--queue", default="es-export-batches")
    parser.add_argument("--batch-size", type=int, default=5, help="records per SQS event (1-10)")
    parser.add_argument("--visibility-timeout", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    InvokeHandler.function_name = args.function
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = args.function  # as the Lambda runtime sets it; errors name it
    stop = threading.Event()
    threading.Thread(target=poll_queue, args=(args.queue, args.batch_size, args.visibility_timeout, stop),
                     daemon=True, name="sqs-poller").start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), InvokeHandler)
    log.info("Lambda %s on http://127.0.0.1:%d, polling SQS queue %s", args.function, args.port, args.queue)
    try:
        server.serve_forever()
    finally:
        stop.set()
        time.sleep(0.1)


if __name__ == "__main__":
    main()
