"""The message Airflow sends the processing Lambda (direct invoke or SQS), and its checks.

A payload is {"batch": {job_id, batch_id, batch_no, size, run_id}, "expect": {...}}. It can change
nothing the function reads or writes: whoever may send to the queue must not be able to copy an
index the function can read into the export prefix, or write into another tracking database. So a
payload with any other key ("settings" of earlier versions included) is refused, naming the keys.
"expect" holds what Airflow believes the function uses (`build_payload` fills it from the Variable
es_message_export_config and the mysql_tracking connection); a value that differs is refused,
naming the setting, the function's value and Airflow's, never used instead of the environment.
"""

from __future__ import annotations

import os
from typing import Any

from es_export.config import ExportConfig
from es_export.errors import ConfigError
from es_export.model import Batch

BATCH_KEYS = ("job_id", "batch_id", "batch_no", "size")  # required; "run_id" is optional


# What Airflow may tell the function it expects, and where the function's value comes from. These
# decide which documents are read and where and how results go (sse_kms_key_id: objects the function
# writes must be encrypted as Airflow's are, or readers holding only one key lose some of them);
# tuning (page sizes, concurrency) and the retry policy are the function's own.
EXPECTABLE = {
    "messages_index": "EXPORT_CONFIG", "history_index": "EXPORT_CONFIG", "status_index": "EXPORT_CONFIG",
    "audit_index": "EXPORT_CONFIG", "message_id_field": "EXPORT_CONFIG", "bucket": "EXPORT_CONFIG",
    "prefix": "EXPORT_CONFIG", "layout": "EXPORT_CONFIG", "sse_kms_key_id": "EXPORT_CONFIG",
    "tracking_database": "MYSQL_DB",
}
# Expected keys a payload may leave out, and what leaving one out means. sse_kms_key_id is sent only
# when set, so functions older than it keep accepting the payloads of everyone who does not use it
# (they refuse an unknown expected key, which is right when Airflow encrypts and they cannot).
ABSENT_MEANS = {"sse_kms_key_id": None}


def build_payload(cfg: ExportConfig, batch: dict[str, Any], *, tracking_database: str | None) -> dict[str, Any]:
    """What the sender puts in an invoke or a queue message: the batch and what it expects the function uses."""
    expect = _expectable(cfg, tracking_database)
    for name in ("tracking_database", *ABSENT_MEANS):
        if expect[name] is None:
            del expect[name]
    return {"batch": {k: batch[k] for k in (*BATCH_KEYS, "run_id")}, "expect": expect}


def _expectable(cfg: ExportConfig, tracking_database: str | None) -> dict[str, Any]:
    """The values of EXPECTABLE as they travel in JSON (a string or None; a Layout as its value)."""
    values = {name: getattr(cfg, name) for name in EXPECTABLE if name != "tracking_database"}
    return {**{name: None if value is None else str(value) for name, value in values.items()},
            "tracking_database": tracking_database}


def parse(payload: Any) -> tuple[Batch, str, dict[str, Any]]:
    if not isinstance(payload, dict):
        raise ConfigError(f"the payload must be a JSON object, got {type(payload).__name__}")
    refused = sorted(k for k in payload if k not in ("batch", "expect"))
    settings = payload.get("settings")
    if isinstance(settings, dict) and settings:  # name each override, so the sender sees what was refused
        refused = [k for k in refused if k != "settings"] + [f"settings.{k}" for k in sorted(settings)]
    if refused:
        raise ConfigError(
            f"the payload carries key(s) the function does not accept: {refused}. The function takes its "
            "configuration (indices, bucket, prefix, tracking database, ...) only from its environment "
            "(EXPORT_CONFIG, MYSQL_DB); a payload is {'batch': {job_id, batch_id, batch_no, size, run_id}, "
            "'expect': {...}}. Nothing was exported")
    if "batch" not in payload:
        raise ConfigError("the payload has no 'batch': send {'batch': {job_id, batch_id, batch_no, size, "
                          "run_id}, 'expect': {...}}")
    raw = payload["batch"]
    if not isinstance(raw, dict):
        raise ConfigError(f"the payload's 'batch' must be an object, got {raw!r}")
    unknown = sorted(set(raw) - {*BATCH_KEYS, "run_id"})
    missing = [k for k in BATCH_KEYS if k not in raw]
    if unknown or missing:
        raise ConfigError(f"the payload's 'batch' must have exactly {[*BATCH_KEYS]} and optionally 'run_id'; "
                          f"unknown: {unknown}, missing: {missing}")
    for key in BATCH_KEYS:
        if not isinstance(raw[key], int) or isinstance(raw[key], bool):
            raise ConfigError(f"batch.{key} must be an integer, got {raw[key]!r}")
    run_id = raw.get("run_id", "")
    if not isinstance(run_id, str):
        raise ConfigError(f"batch.run_id must be a string, got {run_id!r}")
    expect = payload.get("expect") or {}
    if not isinstance(expect, dict):
        raise ConfigError(f"the payload's 'expect' must be an object, got {expect!r}")
    unknown = sorted(set(expect) - set(EXPECTABLE))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in the payload's 'expect'; known keys: {sorted(EXPECTABLE)}")
    return Batch.from_dict(raw), run_id, expect


def check_expected(cfg: ExportConfig, database: str, expect: dict[str, Any]) -> None:
    """Refuse to run on settings other than those the sender expects; never take them from the payload."""
    actual = _expectable(cfg, database)
    if expect:  # from Airflow (a person invoking by hand sends none: the environment alone decides)
        expect = {**ABSENT_MEANS, **expect}
    differ = [name for name, value in expect.items() if actual[name] != value]
    if differ:
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "the processing Lambda")
        details = "; ".join(f"{name}: the function has {actual[name]!r}, Airflow expects {expect[name]!r}"
                            for name in differ)
        env_vars = sorted({EXPECTABLE[name] for name in differ})
        raise ConfigError(
            f"the configuration of {function} differs from Airflow's: {details}. Set "
            f"{' and '.join(env_vars)} in the environment of {function} (or change the Variable "
            "es_message_export_config / the mysql_tracking connection) so they agree. Nothing was exported")
