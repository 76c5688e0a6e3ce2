from datetime import UTC, datetime, timedelta

import pytest

from es_export.config import MAX_MAP_LENGTH, Dispatch, ExportConfig, RetryParams, RunParams, parse_instant
from es_export.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_are_the_local_ones():
    cfg = ExportConfig()
    assert (cfg.bucket, cfg.prefix, cfg.messages_index) == ("message-export", "messages", "messages")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"bucket": ""}, "bucket must be a non-empty string", id="empty-bucket"),
        pytest.param({"prefix": "a/"}, "prefix must be a string without leading or trailing '/'", id="prefix-slash"),
        pytest.param({"scan_page_size": 0}, "scan_page_size must be a positive integer, got 0", id="zero-page"),
        pytest.param({"scan_page_size": 20000}, "at most 10000", id="page-over-window"),
        pytest.param({"max_batches": MAX_MAP_LENGTH + 1}, "max_batches must be at most 1024", id="over-map-limit"),
        pytest.param({"prefix": "p" * 205}, "prefix is 205 bytes long; at most 204 fit", id="prefix-too-long"),
        pytest.param({"prefix": "é" * 103}, "prefix is 206 bytes long", id="prefix-bytes-not-chars"),
        pytest.param({"extract_slices": 0}, "extract_slices must be a whole number from 1 to 32, got 0",
                     id="no-slices"),
        pytest.param({"extract_slices": 33}, "extract_slices must be a whole number from 1 to 32, got 33",
                     id="too-many-slices"),
        pytest.param({"extract_slices": True}, "extract_slices must be a whole number", id="slices-bool"),
        pytest.param({"colour": "red"}, r"unknown configuration key\(s\) \['colour'\]", id="unknown-key"),
        pytest.param({"sse_kms_key_id": ""}, r"sse_kms_key_id must be a non-empty string \(a KMS key id, key ARN or "
                     r"alias\) or null for no SSE-KMS, got ''", id="sse-kms-empty"),
        pytest.param({"sse_kms_key_id": "  "}, "sse_kms_key_id must be a non-empty string", id="sse-kms-blank"),
        pytest.param({"sse_kms_key_id": 42}, "sse_kms_key_id must be a non-empty string .* got 42",
                     id="sse-kms-number"),
        pytest.param({"tracking_retention_days": -1}, r"tracking_retention_days must be a whole number of days "
                     r"\(0 or null: keep tracking rows for ever\), got -1", id="retention-negative"),
        pytest.param({"tracking_retention_days": "90"}, "tracking_retention_days must be a whole number of days .* "
                     "got '90'", id="retention-string"),
        pytest.param({"tracking_retention_days": 1.5}, "tracking_retention_days .* got 1.5", id="retention-fraction"),
        pytest.param({"tracking_retention_days": True}, "tracking_retention_days .* got True", id="retention-bool"),
    ],
)
def test_bad_config_is_refused_naming_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        ExportConfig.from_mapping(values)


@pytest.mark.parametrize("key_id", [None, "1234abcd-12ab-34cd-56ef-1234567890ab", "alias/es-export",
                                    "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"])
def test_sse_kms_key_id_is_a_key_or_null(key_id):
    assert ExportConfig.from_mapping({"sse_kms_key_id": key_id}).sse_kms_key_id == key_id
    assert ExportConfig().sse_kms_key_id is None


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(None, None, id="null-keeps-for-ever"), pytest.param(0, 0, id="zero-keeps-for-ever"),
    pytest.param(30, 30, id="thirty-days"),
])
def test_tracking_retention_days_is_days_or_off(value, expected):
    assert ExportConfig.from_mapping({"tracking_retention_days": value}).tracking_retention_days == expected
    assert ExportConfig().tracking_retention_days == 90


def test_params_default_to_the_data_interval():
    start = datetime(2024, 10, 1, tzinfo=UTC)
    p = RunParams.resolve({}, start, start + timedelta(days=1))
    assert (p.start, p.end, p.dispatch, p.batch_size, p.reprocess) == (
        start, start + timedelta(days=1), Dispatch.LOCAL, 500, False)


def test_params_override_the_interval_and_dates_mean_utc_midnight():
    p = RunParams.resolve({"start": "2024-10-02", "end": "2024-10-03T12:00:00+02:00"}, None, None)
    assert p.start == datetime(2024, 10, 2, tzinfo=UTC)
    assert p.end == datetime(2024, 10, 3, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"start": "2024-10-02", "end": "2024-10-01"}, r"end \(2024-10-01.*\) must be after start",
                     id="end-before-start"),
        pytest.param({"start": "2024-01-01", "end": "2024-03-01"}, "longer than the maximum of 31 days",
                     id="range-too-long"),
        pytest.param({"start": "2024-10-01", "end": "2024-10-02", "dispatch": "ftp"},
                     r"dispatch must be one of \['local', 'lambda', 'sqs'\], got 'ftp'", id="unknown-dispatch"),
        pytest.param({"start": "yesterday", "end": "2024-10-02"}, "start must be an ISO date", id="bad-start"),
        pytest.param({"start": "2024-10-01", "end": "2024-10-02", "batch_size": -5},
                     "batch_size must be a positive integer, got -5", id="negative-batch"),
    ],
)
def test_bad_params_are_refused_naming_the_param(params, message):
    with pytest.raises(ConfigError, match=message):
        RunParams.resolve(params, None, None)


def test_params_survive_xcom_round_trip():
    p = RunParams.resolve({"start": "2024-10-01", "end": "2024-10-02", "reprocess": True, "batch_size": 7}, None, None)
    assert RunParams.from_dict(p.as_dict()) == p


def test_naive_datetimes_are_utc():
    assert parse_instant("x", datetime(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)


def test_the_longest_key_of_the_longest_prefix_fits_in_s3():
    from datetime import date

    from es_export import sink

    cfg = ExportConfig(prefix="p" * 204)
    longest = sink.object_key(cfg.prefix, date(2024, 10, 1), "é" * 133)  # 798 bytes encoded, not hashed
    assert len(longest.encode()) <= 1024
    hashed = sink.object_key(cfg.prefix, date(2024, 10, 1), "é" * 1000)
    assert len(hashed.encode()) <= 1024


def test_retry_params_have_their_own_type_with_no_range_limit():
    from es_export.config import RetryParams

    everything = RetryParams.resolve({"job_id": None, "start": "", "end": None, "revive_dead": False})
    assert (everything.job_id, everything.start, everything.end) == (None, None, None)
    years = RetryParams.resolve({"start": "2001-01-01", "end": "2026-01-01", "job_id": 7, "dispatch": "sqs"})
    assert RetryParams.from_dict(years.as_dict()) == years
    with pytest.raises(ConfigError, match="end .* must be after start"):
        RetryParams(start="2024-10-02", end="2024-10-01")
    with pytest.raises(ConfigError, match="job_id must be a positive integer, got 0"):
        RetryParams(job_id=0)
    with pytest.raises(ConfigError, match="dispatch must be one of"):
        RetryParams(dispatch="carrier-pigeon")


@pytest.mark.parametrize("resolve", [
    pytest.param(lambda p: RunParams.resolve(p, "2024-10-01", "2024-10-02", max_batch_size=5000), id="export"),
    pytest.param(lambda p: RetryParams.resolve(p, max_batch_size=5000), id="retry"),
])
def test_a_batch_size_above_max_batch_size_is_refused_not_lowered(resolve):
    with pytest.raises(ConfigError, match="batch_size=5001 is above max_batch_size=5000"):
        resolve({"batch_size": 5001})
    assert resolve({"batch_size": 5000}).batch_size == 5000


def test_more_extract_slices_than_the_configuration_allows_are_refused_before_any_work():
    start = datetime(2024, 10, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="extract_slices=9 is above max_extract_slices=8"):
        RunParams.resolve({"extract_slices": 9}, start, start + timedelta(days=1), max_extract_slices=8)
    assert RunParams.resolve({"extract_slices": 8}, start, start + timedelta(days=1),
                             max_extract_slices=8).extract_slices == 8
    with pytest.raises(ConfigError, match="extract_slices=4 is above max_extract_slices=2"):
        ExportConfig(extract_slices=4, max_extract_slices=2)


@pytest.mark.parametrize("dispatch", [Dispatch.LAMBDA, Dispatch.SQS])
def test_the_parquet_layout_is_refused_outside_the_worker(dispatch):
    cfg = ExportConfig(layout="parquet")
    cfg.check_dispatch(Dispatch.LOCAL)
    with pytest.raises(ConfigError, match=f"runs with dispatch=local only, not '{dispatch.value}'"):
        cfg.check_dispatch(dispatch)
    ExportConfig(layout="ndjson_gzip").check_dispatch(dispatch)


def test_the_parquet_layout_without_pyarrow_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ConfigError, match=r"pyarrow==25\.0\.0 .* to requirements\.txt"):
        ExportConfig(layout="parquet").check_dispatch(Dispatch.LOCAL)
