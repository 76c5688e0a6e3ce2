"""The Lambda's payload: only the batch, configuration only from the function's environment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from es_export import pipeline
from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export.payload import build_payload
from es_export_lambda import handler as lambda_handler

pytestmark = pytest.mark.unit

INCLUDE = Path(__file__).resolve().parents[2] / "include"
ENV_CONFIG = {"messages_index": "fn-messages", "bucket": "fn-bucket", "prefix": "fn/prefix"}
BATCH = {"job_id": 7, "batch_id": 31, "batch_no": 2, "size": 100, "run_id": "manual__1"}


@pytest.fixture()
def function(monkeypatch):
    """A function's environment; every connection fails the test, and the pipeline is recorded instead."""
    monkeypatch.setenv("EXPORT_CONFIG", json.dumps(ENV_CONFIG))
    monkeypatch.setenv("MYSQL_DB", "fn_tracking")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "es-export-fn")
    connected = []

    def refuse(*args):
        connected.append(args)
        raise AssertionError("the handler connected to a service")

    class Conn:
        def close(self):
            pass

    calls = []

    def mysql(database):
        calls.append(("mysql", database))
        return Conn()

    def process_batch(es, conn, s3, cfg, batch, *, run_id, lease_seconds=None):
        calls.append(("process", cfg, batch, run_id))
        return pipeline.BatchResult(batch.job_id, batch.batch_id, batch.batch_no, batch.size, batch.size, 0, 1, 0.1)

    monkeypatch.setattr(lambda_handler, "_mysql", refuse)
    monkeypatch.setattr(lambda_handler, "_elasticsearch", lambda: refuse())
    monkeypatch.setattr(lambda_handler, "_s3", refuse)
    monkeypatch.setattr(pipeline, "process_batch", process_batch)
    return {"refuse": refuse, "mysql": mysql, "calls": calls, "connected": connected, "monkeypatch": monkeypatch}


def expected(**changes):
    """What Airflow sends when its Variable and connection agree with the function."""
    cfg = ExportConfig.from_mapping(ENV_CONFIG)
    payload = build_payload(cfg, BATCH, tracking_database="fn_tracking")
    payload["expect"].update(changes)
    return payload


@pytest.mark.parametrize(("payload", "match"), [
    pytest.param({"batch": BATCH, "settings": {"messages_index": "secret-index"}},
                 r"does not accept: \['settings\.messages_index'\]\. The function takes its configuration "
                 r"\(indices, bucket, prefix, tracking database, \.\.\.\) only from its environment "
                 r"\(EXPORT_CONFIG, MYSQL_DB\)", id="settings-index"),
    pytest.param({"batch": BATCH, "settings": {"tracking_database": "other", "bucket": "b"}},
                 r"does not accept: \['settings\.bucket', 'settings\.tracking_database'\]", id="settings-database"),
    pytest.param({"batch": BATCH, "settings": {}}, r"does not accept: \['settings'\]", id="empty-settings"),
    pytest.param({"batch": BATCH, "database": "other"}, r"does not accept: \['database'\]", id="unknown-key"),
    pytest.param({"settings": {}}, r"does not accept: \['settings'\]", id="settings-without-batch"),
    pytest.param({}, r"the payload has no 'batch'", id="no-batch"),
    pytest.param({"batch": {**BATCH, "bucket": "b"}}, r"unknown: \['bucket'\], missing: \[\]", id="batch-extra-key"),
    pytest.param({"batch": {"job_id": 1}}, r"missing: \['batch_id', 'batch_no', 'size'\]", id="batch-missing-key"),
    pytest.param({"batch": {**BATCH, "size": "100"}}, r"batch\.size must be an integer, got '100'", id="batch-type"),
    pytest.param({"batch": BATCH, "expect": {"upload_concurrency": 4}},
                 r"unknown key\(s\) \['upload_concurrency'\] in the payload's 'expect'", id="expect-unknown"),
    pytest.param(["batch"], r"the payload must be a JSON object, got list", id="not-an-object"),
])
def test_a_payload_that_would_change_the_configuration_is_refused(function, payload, match):
    with pytest.raises(ConfigError, match=match):
        lambda_handler.process(payload)
    assert function["connected"] == [] and function["calls"] == []


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"messages_index": "af-messages"},
                 "the configuration of es-export-fn differs from Airflow's: messages_index: the function has "
                 "'fn-messages', Airflow expects 'af-messages'. Set EXPORT_CONFIG in the environment of "
                 "es-export-fn (or change the Variable es_message_export_config / the mysql_tracking connection) "
                 "so they agree. Nothing was exported", id="index"),
    pytest.param({"bucket": "af-bucket", "tracking_database": "tracking"},
                 "the configuration of es-export-fn differs from Airflow's: bucket: the function has 'fn-bucket', "
                 "Airflow expects 'af-bucket'; tracking_database: the function has 'fn_tracking', Airflow expects "
                 "'tracking'. Set EXPORT_CONFIG and MYSQL_DB in the environment of es-export-fn (or change the "
                 "Variable es_message_export_config / the mysql_tracking connection) so they agree. Nothing was "
                 "exported", id="bucket-and-database"),
    pytest.param({"layout": "ndjson_gzip"}, "layout: the function has 'per_message', Airflow expects 'ndjson_gzip'",
                 id="layout"),
])
def test_a_configuration_airflow_does_not_expect_is_refused(function, changes, message):
    with pytest.raises(ConfigError) as err:
        lambda_handler.process(expected(**changes))
    assert message in str(err.value)
    assert function["connected"] == [] and function["calls"] == []


def test_the_function_runs_on_its_own_environment(function):
    function["monkeypatch"].setattr(lambda_handler, "_mysql", function["mysql"])
    function["monkeypatch"].setattr(lambda_handler, "_elasticsearch", lambda: "es")
    function["monkeypatch"].setattr(lambda_handler, "_s3", lambda concurrency, owner: "s3")
    result = lambda_handler.process(expected())
    assert result["batch_id"] == 31 and result["completed"] == 100
    (_, database), (_, cfg, batch, run_id) = function["calls"]
    assert database == "fn_tracking"
    assert cfg == ExportConfig.from_mapping(ENV_CONFIG)
    assert (batch.batch_id, batch.size, run_id) == (31, 100, "manual__1")
    # Without "expect" (a person invoking by hand) the environment alone decides.
    assert lambda_handler.process({"batch": BATCH})["completed"] == 100


def test_the_payload_carries_only_the_batch_and_what_airflow_expects():
    cfg = ExportConfig(messages_index="m", bucket="b", sqs_queue_name="q", upload_concurrency=4)
    payload = json.loads(json.dumps(build_payload(cfg, {**BATCH, "dispatch": "sqs"},
                                                                 tracking_database="t")))
    assert payload == {"batch": BATCH, "expect": {
        "messages_index": "m", "history_index": "message_history", "status_index": "message_status",
        "audit_index": "message_audit", "message_id_field": "message_id", "bucket": "b", "prefix": "messages",
        "layout": "per_message", "tracking_database": "t"}}


KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_the_payload_expects_the_kms_key_only_when_one_is_set():
    cfg = ExportConfig(sse_kms_key_id=KMS_KEY)
    assert build_payload(cfg, BATCH, tracking_database="t")["expect"]["sse_kms_key_id"] == KMS_KEY
    # Unset, the key is left out, so a function older than the setting accepts the payload as before.
    assert "sse_kms_key_id" not in build_payload(ExportConfig(), BATCH, tracking_database="t")["expect"]


@pytest.mark.parametrize(("function_key", "airflow_key", "message"), [
    pytest.param(None, KMS_KEY, f"sse_kms_key_id: the function has None, Airflow expects {KMS_KEY!r}",
                 id="airflow-encrypts"),
    pytest.param(KMS_KEY, None, f"sse_kms_key_id: the function has {KMS_KEY!r}, Airflow expects None",
                 id="function-encrypts"),
    pytest.param(KMS_KEY, "alias/other", f"sse_kms_key_id: the function has {KMS_KEY!r}, Airflow expects "
                 "'alias/other'", id="other-key"),
])
def test_the_function_encrypts_as_airflow_does_or_refuses_the_batch(function, function_key, airflow_key, message):
    function["monkeypatch"].setenv("EXPORT_CONFIG", json.dumps({**ENV_CONFIG, "sse_kms_key_id": function_key}))
    cfg = ExportConfig.from_mapping({**ENV_CONFIG, "sse_kms_key_id": airflow_key})
    with pytest.raises(ConfigError, match="Set EXPORT_CONFIG in the environment of es-export-fn") as err:
        lambda_handler.process(build_payload(cfg, BATCH, tracking_database="fn_tracking"))
    assert message in str(err.value)
    assert function["connected"] == [] and function["calls"] == []


def test_the_function_uses_its_kms_key_when_airflow_expects_it(function):
    function["monkeypatch"].setenv("EXPORT_CONFIG", json.dumps({**ENV_CONFIG, "sse_kms_key_id": KMS_KEY}))
    function["monkeypatch"].setattr(lambda_handler, "_mysql", function["mysql"])
    function["monkeypatch"].setattr(lambda_handler, "_elasticsearch", lambda: "es")
    function["monkeypatch"].setattr(lambda_handler, "_s3", lambda concurrency, owner: "s3")
    cfg = ExportConfig.from_mapping({**ENV_CONFIG, "sse_kms_key_id": KMS_KEY})
    lambda_handler.process(build_payload(cfg, BATCH, tracking_database="fn_tracking"))
    assert function["calls"][1][1].sse_kms_key_id == KMS_KEY  # what process_batch hands the sink
    # A person invoking by hand (no "expect"): the function's own key decides.
    lambda_handler.process({"batch": BATCH})
    assert function["calls"][3][1].sse_kms_key_id == KMS_KEY


def test_an_sqs_record_with_an_override_returns_to_the_queue(function):
    bad = {"batch": BATCH, "settings": {"messages_index": "secret-index"}}
    event = {"Records": [{"messageId": "a", "body": json.dumps(bad)}]}
    assert lambda_handler.handler(event) == {"batchItemFailures": [{"itemIdentifier": "a"}]}
    assert function["connected"] == [] and function["calls"] == []


def test_importing_the_handler_leaves_the_root_logger_alone():
    script = ("import logging\nlogging.getLogger().setLevel(logging.ERROR)\n"
              "import es_export_lambda.handler\nprint(logging.getLogger().level)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=INCLUDE, env={"LOG_LEVEL": "DEBUG", "PATH": ""},
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(40)


def test_a_function_configured_for_parquet_refuses_before_any_connection(function):
    function["monkeypatch"].setenv("EXPORT_CONFIG", json.dumps({**ENV_CONFIG, "layout": "parquet"}))
    with pytest.raises(ConfigError, match="runs with dispatch=local only, not 'lambda'"):
        lambda_handler.process({"batch": BATCH})
    assert function["connected"] == [] and function["calls"] == []
