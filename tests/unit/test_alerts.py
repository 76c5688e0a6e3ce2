"""The late-run alert's settings and message (the alert firing is tested in a running Airflow)."""

import asyncio
import json

import pytest

from es_export.errors import ConfigError
from es_export_airflow import alerts

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ES_EXPORT_DEADLINE_SECONDS", "ES_EXPORT_ALERT_SNS_TOPIC_ARN", "ES_EXPORT_ALERT_NOTIFIER",
                 "ES_EXPORT_ALERT_NOTIFIER_KWARGS"):
        monkeypatch.delenv(name, raising=False)


def test_default_deadline_is_six_hours_after_queueing():
    alert = alerts.late_run_deadline()
    assert alert.interval.total_seconds() == 6 * 3600
    assert alert.reference.reference_name == "DagRunQueuedAtDeadline"


@pytest.mark.parametrize("raw", ["-5", "1h", "2.5"])
def test_a_bad_deadline_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("ES_EXPORT_DEADLINE_SECONDS", raw)
    with pytest.raises(ConfigError, match="ES_EXPORT_DEADLINE_SECONDS"):
        alerts.deadline_seconds()


@pytest.mark.parametrize("raw", ["off", "0", "OFF"])
def test_the_deadline_can_be_switched_off(monkeypatch, raw):
    monkeypatch.setenv("ES_EXPORT_DEADLINE_SECONDS", raw)
    assert alerts.late_run_deadline() is None


def test_without_a_topic_the_alert_is_a_log_line_only():
    assert alerts.notifier_settings() == {"notifier": "", "notifier_kwargs": {}}


def test_with_a_topic_sns_gets_the_message(monkeypatch):
    monkeypatch.setenv("ES_EXPORT_ALERT_SNS_TOPIC_ARN", "arn:aws:sns:eu-west-1:1:t")
    settings = alerts.notifier_settings()
    assert settings["notifier"] == alerts.SNS_NOTIFIER
    assert settings["notifier_kwargs"]["target_arn"] == "arn:aws:sns:eu-west-1:1:t"


def test_another_notifier_takes_its_own_arguments(monkeypatch):
    monkeypatch.setenv("ES_EXPORT_ALERT_NOTIFIER", "tests.unit.test_alerts.RecordingNotifier")
    monkeypatch.setenv("ES_EXPORT_ALERT_NOTIFIER_KWARGS", json.dumps({"text": "late: {message}"}))
    settings = alerts.notifier_settings()
    assert settings == {"notifier": "tests.unit.test_alerts.RecordingNotifier",
                        "notifier_kwargs": {"text": "late: {message}"}}


def test_bad_notifier_arguments_are_refused(monkeypatch):
    monkeypatch.setenv("ES_EXPORT_ALERT_NOTIFIER", "x.Y")
    monkeypatch.setenv("ES_EXPORT_ALERT_NOTIFIER_KWARGS", "[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        alerts.notifier_settings()


class RecordingNotifier:
    sent: list = []

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, context) -> None:
        RecordingNotifier.sent.append((self.text, context["dag_run"]["dag_run_id"]))


def test_the_callback_sends_through_the_configured_notifier():
    context = {"dag_run": {"dag_id": "es_message_export", "dag_run_id": "manual__1", "state": "running",
                           "queued_at": "2026-01-01T00:00:00Z"}, "deadline": {"deadline_time": "2026-01-01T06:00Z"}}
    message = asyncio.run(alerts.late_run(notifier=f"{__name__}.RecordingNotifier",
                                          notifier_kwargs={"text": "late: {message}"}, context=context))
    assert "manual__1 is late" in message
    assert RecordingNotifier.sent[-1] == (f"late: {message}", "manual__1")


def test_the_export_dag_carries_the_deadline(monkeypatch):
    from support import parse_dag

    monkeypatch.setenv("ES_EXPORT_DEADLINE_SECONDS", "900")
    dag = parse_dag("es_message_export")
    assert [d.interval.total_seconds() for d in dag.deadline] == [900]
    assert dag.deadline[0].callback.path == "es_export_airflow.alerts.late_run"


def test_a_failed_run_alert_lists_the_first_reasons_only():
    from datetime import datetime

    job = {"id": 7, "status": "failed", "started_at": datetime(2025, 1, 2), "interval_start": datetime(2025, 1, 1),
           "interval_end": datetime(2025, 1, 2), "es_count": 10, "failed": 9, "last_error": "3 objects missing",
           "airflow_url": "http://airflow/run"}
    failures = [{"message_id": f"m{i}", "attempts": 1, "error": "gone"} for i in range(9)]
    text = alerts.failed_run_message(dag_id="es_message_export", run_id="r1", reason="task_failure", job=job,
                                     failed_task="process[3]", failures=failures)
    assert "interval: 2025-01-01T00:00:00+00:00 .. 2025-01-02T00:00:00+00:00" in text
    assert "counts: job_runs id 7, status failed: es_count 10, ids_found -" in text
    listed = [line for line in text.splitlines() if line.startswith("- ")]
    assert listed[:3] == ["- task process[3] failed (its log says why)", "- 3 objects missing",
                          "- message 'm0' (failed or dead, attempt 1): gone"]
    assert len(listed) == alerts.FIRST_REASONS
    assert text.endswith("run: http://airflow/run")
