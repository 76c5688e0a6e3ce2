"""Configuration (where things are, how big the steps are) and run parameters (what to export)."""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from es_export.errors import ConfigError
from es_export.model import RetryPolicy

MAX_MAP_LENGTH = 1024  # Airflow's default [core] max_map_length
MAX_BATCH_SIZE = 20_000  # the batch_size param's limit and max_batch_size's default
MAX_EXTRACT_SLICES = 32  # each slice is a mapped task holding its own point-in-time
MAX_SETTLE_MINUTES = 360  # the settle wait must end well within the run's sensor timeout (6 h)
# S3 keys are at most 1024 bytes: "/dt=YYYY-MM-DD/" (15) + an encoded id of up to 800 + ".json" (5).
MAX_PREFIX_BYTES = 1024 - 15 - 800 - 5
# A Glue database or table name Athena queries without quoting.
GLUE_NAME = re.compile(r"[a-z][a-z0-9_]{0,254}")


class Dispatch(enum.StrEnum):
    LOCAL = "local"
    LAMBDA = "lambda"
    SQS = "sqs"


class Layout(enum.StrEnum):
    PER_MESSAGE = "per_message"  # one JSON object per message
    NDJSON_GZIP = "ndjson_gzip"  # one gzip NDJSON object per batch and day, for high volume
    PARQUET = "parquet"  # one zstd Parquet file per batch and day, for analytics (dispatch=local only)

    @property
    def bundled(self) -> bool:
        """Whether an object holds the documents of many messages (a batch's file of one day)."""
        return self is not Layout.PER_MESSAGE


def _dispatch(value: Any) -> Dispatch:
    try:
        return Dispatch(value)
    except ValueError:
        raise ConfigError(f"dispatch must be one of {[m.value for m in Dispatch]}, got {value!r}") from None


def _extract_slices(value: Any, name: str = "extract_slices") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_EXTRACT_SLICES:
        raise ConfigError(f"{name} must be a whole number from 1 to {MAX_EXTRACT_SLICES}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ExportConfig:
    """Everything about where data lives and how the work is cut. Defaults suit the local stack.

    In Airflow it comes from the Variable `es_message_export_config` (a JSON object whose keys are
    these field names); in Lambda from environment variables.
    """

    messages_index: str = "messages"
    history_index: str = "message_history"
    status_index: str = "message_status"
    audit_index: str = "message_audit"
    timestamp_field: str = "timestamp"
    message_id_field: str = "message_id"
    bucket: str = "message-export"
    prefix: str = "messages"
    layout: Layout = Layout.PER_MESSAGE
    scan_page_size: int = 5000
    pit_keep_alive: str = "5m"
    insert_chunk_size: int = 2000
    details_page_size: int = 10000
    upload_concurrency: int = 16
    max_batches: int = 500
    max_range_days: int = 31
    max_attempts: int = 5
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    lease_seconds: int = 7200
    max_batch_size: int = MAX_BATCH_SIZE
    lambda_timeout_seconds: int = 900
    dispatch_lease_seconds: int = 3600
    retry_max_messages: int = 100_000
    sns_topic_arn: str | None = None
    # The 12-digit AWS account that owns `bucket`: sent as ExpectedBucketOwner with every S3 call, so a
    # bucket deleted and re-created by another account under the same name is never written. None: not sent.
    expected_bucket_owner: str | None = None
    # SSE-KMS: every data object and manifest is PUT with aws:kms and this key (id, ARN or alias).
    # None: no encryption header, so the bucket's default encryption applies.
    sse_kms_key_id: str | None = None
    lambda_function_name: str = "es-message-export-processor"
    sqs_queue_name: str = "es-export-batches"
    sqs_max_receive: int = 3
    # Completed message_tracking rows older than this many days are deleted (by es_message_retry's
    # purge_tracking task); 0 or None keeps them for ever.
    # See docs/operations.md#retention-how-large-the-tracking-table-stays.
    tracking_retention_days: int | None = 90
    # Time slices of the extract, each its own mapped task with its own point-in-time; a run's
    # `extract_slices` param overrides it. See docs/operations.md#large-days-a-sliced-extract.
    extract_slices: int = 1
    # The most extract slices one run may ask for (each holds a point-in-time on the cluster), and the
    # most runs of one DAG exporting at once (backfills included): a run beyond it refuses to start.
    # None: no cap (a job whose run died without Airflow marking it failed counts as live for 12 hours).
    max_extract_slices: int = 8
    max_live_runs: int | None = None
    # The scheduled run of a day starts this many minutes after the day ends, so the late writes of its
    # last hour are in the first export; 0: at once. A run of a range that ended longer ago never waits.
    settle_minutes: int = 60
    # es_message_refresh: the field of each related index that holds when a document was written or last
    # changed (per section "history", "status", "audit" in related_changed_fields, else this one).
    related_changed_field: str = "timestamp"
    related_changed_fields: dict[str, str] = field(default_factory=dict)
    # How far before its watermark a refresh looks again (an index's refresh interval, writers' clocks).
    refresh_overlap_minutes: int = 5
    # How many past days a refresh compares with the cluster for late messages.
    refresh_lookback_days: int = 3
    # A refresh whose watermark is older than this alerts like a failed run; null: never.
    refresh_max_lag_minutes: int | None = 180
    # The Glue Data Catalog table over the archive (both set: on), created and kept right by the export's
    # `catalog` task, with partition projection on dt; see docs/configuration.md#querying-the-archive.
    glue_database: str | None = None
    glue_table: str | None = None

    def __post_init__(self) -> None:
        for name in ("messages_index", "history_index", "status_index", "audit_index",
                     "timestamp_field", "message_id_field", "bucket"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.sse_kms_key_id is not None and (not isinstance(self.sse_kms_key_id, str)
                                                or not self.sse_kms_key_id.strip()):
            raise ConfigError("sse_kms_key_id must be a non-empty string (a KMS key id, key ARN or alias) or "
                              f"null for no SSE-KMS, got {self.sse_kms_key_id!r}")
        owner = self.expected_bucket_owner
        if owner is not None and not (isinstance(owner, str) and owner.isdigit() and len(owner) == 12):
            raise ConfigError(f"expected_bucket_owner must be the 12-digit AWS account id that owns the bucket, "
                              f"got {owner!r}")
        if not isinstance(self.prefix, str) or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ConfigError(f"prefix must be a string without leading or trailing '/', got {self.prefix!r}")
        if len(self.prefix.encode("utf-8")) > MAX_PREFIX_BYTES:
            raise ConfigError(f"prefix is {len(self.prefix.encode('utf-8'))} bytes long; at most {MAX_PREFIX_BYTES} "
                              "fit, because S3 keys end at 1024 bytes and a message's key adds up to "
                              f"{1024 - MAX_PREFIX_BYTES} (day folder and encoded id)")
        for name in ("scan_page_size", "insert_chunk_size", "details_page_size", "upload_concurrency",
                     "max_batches", "max_range_days", "max_attempts", "retry_base_seconds",
                     "retry_max_seconds", "lease_seconds", "retry_max_messages", "sqs_max_receive",
                     "max_batch_size", "lambda_timeout_seconds", "dispatch_lease_seconds"):
            _positive(name, getattr(self, name))
        _extract_slices(self.extract_slices)
        _extract_slices(self.max_extract_slices, "max_extract_slices")
        if self.extract_slices > self.max_extract_slices:
            raise ConfigError(f"extract_slices={self.extract_slices} is above max_extract_slices="
                              f"{self.max_extract_slices}; lower it, or raise max_extract_slices")
        if self.max_live_runs is not None:
            _positive("max_live_runs", self.max_live_runs)
        self._check_refresh()
        days = self.tracking_retention_days
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 0):
            raise ConfigError("tracking_retention_days must be a whole number of days (0 or null: keep tracking "
                              f"rows for ever), got {days!r}")
        if self.scan_page_size > 10000 or self.details_page_size > 10000:
            raise ConfigError("scan_page_size and details_page_size must be at most 10000 "
                              "(Elasticsearch's index.max_result_window)")
        try:
            object.__setattr__(self, "layout", Layout(self.layout))
        except ValueError:
            raise ConfigError(f"layout must be one of {[m.value for m in Layout]}, got {self.layout!r}") from None
        self._check_catalog()
        if self.max_batches > MAX_MAP_LENGTH:
            raise ConfigError(f"max_batches must be at most {MAX_MAP_LENGTH} (Airflow's max_map_length), "
                              f"got {self.max_batches}")

    def _check_refresh(self) -> None:
        if not isinstance(self.settle_minutes, int) or isinstance(self.settle_minutes, bool) \
                or not 0 <= self.settle_minutes <= MAX_SETTLE_MINUTES:
            raise ConfigError(f"settle_minutes must be a whole number of minutes from 0 to {MAX_SETTLE_MINUTES}, "
                              f"got {self.settle_minutes!r}")
        if not isinstance(self.related_changed_field, str) or not self.related_changed_field.strip():
            raise ConfigError(f"related_changed_field must be a non-empty string, got {self.related_changed_field!r}")
        fields = self.related_changed_fields
        if not isinstance(fields, dict) or set(fields) - set(self.related_indices()) \
                or not all(isinstance(v, str) and v.strip() for v in fields.values()):
            raise ConfigError("related_changed_fields must map some of "
                              f"{sorted(self.related_indices())} to a field name, got {fields!r}")
        for name in ("refresh_overlap_minutes", "refresh_lookback_days"):
            _positive(name, getattr(self, name))
        lag = self.refresh_max_lag_minutes
        if lag is not None:
            _positive("refresh_max_lag_minutes", lag)

    def _check_catalog(self) -> None:
        if (self.glue_database is None) != (self.glue_table is None):
            raise ConfigError("glue_database and glue_table go together: set both to have the export keep a "
                              f"Glue table over the archive, or neither (got glue_database={self.glue_database!r}, "
                              f"glue_table={self.glue_table!r})")
        for name in ("glue_database", "glue_table"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and GLUE_NAME.fullmatch(value)):
                raise ConfigError(f"{name} must be a lower-case letter followed by up to 254 lower-case letters, "
                                  f"digits or '_' (a name Athena can query without quoting), got {value!r}")

    def check_dispatch(self, dispatch: Dispatch) -> None:
        """Refuse a dispatch mode the layout cannot run in (or a layout whose writer is not installed),
        before any work starts."""
        if self.layout is Layout.PARQUET:
            from es_export import parquet

            parquet.require()
        if self.layout is Layout.PARQUET and dispatch is not Dispatch.LOCAL:
            raise ConfigError(f"layout 'parquet' runs with dispatch=local only, not {dispatch.value!r}: the Parquet "
                              "writer is not in the processing Lambda's package (pyarrow 25.0.0 is a 50 MB wheel, "
                              "157 MB unzipped: twenty times the 2.6 MB package). Trigger with dispatch=local, "
                              "or use layout ndjson_gzip with the Lambda")

    def changed_field(self, section: str) -> str:
        """The change-time field of a related index (section "history", "status" or "audit")."""
        return self.related_changed_fields.get(section, self.related_changed_field)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> ExportConfig:
        """Build from a plain dict (a Variable's JSON); unknown keys are refused, not ignored."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_base_seconds, self.retry_max_seconds)

    def related_indices(self) -> dict[str, str]:
        """Output section name -> index holding documents that carry the message id."""
        return {"history": self.history_index, "status": self.status_index, "audit": self.audit_index}


def parse_instant(name: str, value: Any) -> datetime:
    """A date or datetime (string or object) as an aware UTC datetime; naive means UTC."""
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, date):
        result = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            result = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{name} must be an ISO date or datetime like 2024-10-01, got {value!r}") from None
    else:
        raise ConfigError(f"{name} must be an ISO date or datetime like 2024-10-01, got {value!r}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    result = result.astimezone(UTC)
    # A plain datetime, whatever came in: Airflow's context gives pendulum's, whose sum with a timedelta
    # drops a datetime.timezone.utc zone (and then compares with nothing aware).
    return datetime(result.year, result.month, result.day, result.hour, result.minute, result.second,
                    result.microsecond, tzinfo=UTC)


@dataclass(frozen=True)
class RunParams:
    """What one run exports: the interval [start, end) and how."""

    start: datetime
    end: datetime
    dispatch: Dispatch = Dispatch.LOCAL
    batch_size: int = 500
    reprocess: bool = False
    extract_slices: int = 1
    max_range: timedelta = field(default=timedelta(days=31), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", parse_instant("start", self.start))
        object.__setattr__(self, "end", parse_instant("end", self.end))
        if self.end <= self.start:
            raise ConfigError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        if self.end - self.start > self.max_range:
            raise ConfigError(f"the range from start {self.start.isoformat()} to end {self.end.isoformat()} "
                              f"is longer than the maximum of {self.max_range.days} days; split it into "
                              "several runs (a backfill does that)")
        object.__setattr__(self, "dispatch", _dispatch(self.dispatch))
        _positive("batch_size", self.batch_size)
        if not isinstance(self.reprocess, bool):
            raise ConfigError(f"reprocess must be true or false, got {self.reprocess!r}")
        _extract_slices(self.extract_slices)
        if self.end - self.start < timedelta(milliseconds=self.extract_slices):
            raise ConfigError(f"extract_slices={self.extract_slices} cannot cut the range from start "
                              f"{self.start.isoformat()} to end {self.end.isoformat()} into whole milliseconds; "
                              "use fewer slices")

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "dispatch": self.dispatch.value,
                "batch_size": self.batch_size, "reprocess": self.reprocess, "extract_slices": self.extract_slices}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunParams:
        return cls(start=d["start"], end=d["end"], dispatch=d["dispatch"], batch_size=int(d["batch_size"]),
                   reprocess=bool(d["reprocess"]), extract_slices=int(d.get("extract_slices", 1)),
                   max_range=timedelta(days=36500))

    @classmethod
    def resolve(cls, params: dict[str, Any], interval_start: Any, interval_end: Any,
                max_range_days: int = 31, extract_slices: int = 1,
                max_batch_size: int = MAX_BATCH_SIZE, max_extract_slices: int = MAX_EXTRACT_SLICES) -> RunParams:
        """Params of a trigger, falling back to the run's data interval for start and end, and to the
        configuration's extract_slices; a batch_size above the configuration's max_batch_size, and
        extract_slices above its max_extract_slices, are refused."""
        check_batch_size(params.get("batch_size"), max_batch_size)
        asked = params.get("extract_slices")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > max_extract_slices:
            raise ConfigError(f"extract_slices={asked} is above max_extract_slices={max_extract_slices} (the "
                              "es_message_export_config Variable): each slice holds a point-in-time on the cluster; "
                              f"trigger with at most {max_extract_slices}, or raise max_extract_slices")
        start = params.get("start") or interval_start
        end = params.get("end") or interval_end
        if start is None or end is None:
            raise ConfigError("start and end are required when the run has no data interval")
        return cls(
            start=start,
            end=end,
            dispatch=params.get("dispatch") or Dispatch.LOCAL,
            batch_size=params.get("batch_size") or 500,
            reprocess=bool(params.get("reprocess", False)),
            extract_slices=params.get("extract_slices") or extract_slices,
            max_range=timedelta(days=max_range_days),
        )


def check_batch_size(batch_size: Any, max_batch_size: int) -> None:
    if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > max_batch_size:
        raise ConfigError(f"batch_size={batch_size} is above max_batch_size={max_batch_size} (the "
                          "es_message_export_config Variable); trigger with a batch_size of at most "
                          f"{max_batch_size}, or raise max_batch_size")


@dataclass(frozen=True)
class RetryParams:
    """What one es_message_retry run takes: failed messages (of one job, of a time range, dead ones too)."""

    job_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    revive_dead: bool = False
    dispatch: Dispatch = Dispatch.LOCAL
    batch_size: int = 500

    def __post_init__(self) -> None:
        if self.job_id is not None:
            _positive("job_id", self.job_id)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_instant(name, value))
        if self.start and self.end and self.end <= self.start:
            raise ConfigError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        object.__setattr__(self, "dispatch", _dispatch(self.dispatch))
        _positive("batch_size", self.batch_size)
        if not isinstance(self.revive_dead, bool):
            raise ConfigError(f"revive_dead must be true or false, got {self.revive_dead!r}")

    @classmethod
    def resolve(cls, params: dict[str, Any], max_batch_size: int = MAX_BATCH_SIZE) -> RetryParams:
        """From a trigger's params (empty values mean: no filter)."""
        check_batch_size(params.get("batch_size"), max_batch_size)
        return cls(job_id=params.get("job_id") or None, start=params.get("start") or None,
                   end=params.get("end") or None, revive_dead=bool(params.get("revive_dead", False)),
                   dispatch=params.get("dispatch") or Dispatch.LOCAL, batch_size=params.get("batch_size") or 500)

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None, "revive_dead": self.revive_dead,
                "dispatch": self.dispatch.value, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetryParams:
        return cls(**d)


@dataclass(frozen=True)
class RefreshParams:
    """What one es_message_refresh run takes: changes since its watermark (or since `since`), and how."""

    since: datetime | None = None
    dispatch: Dispatch = Dispatch.LOCAL
    batch_size: int = 500

    def __post_init__(self) -> None:
        if self.since is not None:
            object.__setattr__(self, "since", parse_instant("since", self.since))
        object.__setattr__(self, "dispatch", _dispatch(self.dispatch))
        _positive("batch_size", self.batch_size)

    @classmethod
    def resolve(cls, params: dict[str, Any], max_batch_size: int = MAX_BATCH_SIZE) -> RefreshParams:
        """From a trigger's params (an empty `since`: from the watermark)."""
        check_batch_size(params.get("batch_size"), max_batch_size)
        return cls(since=params.get("since") or None, dispatch=params.get("dispatch") or Dispatch.LOCAL,
                   batch_size=params.get("batch_size") or 500)

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None, "dispatch": self.dispatch.value,
                "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefreshParams:
        return cls(**d)
