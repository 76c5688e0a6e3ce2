"""S3: object keys, serialisation and uploads.

The key of a message is a pure function of its id and day, so a retry or a re-export overwrites
the same object instead of adding a second one (Kafka Connect's S3 sink does the same).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Protocol, TypeVar

from es_export import jsonio, parquet

T = TypeVar("T")


class S3Client(Protocol):
    """What the package asks of a boto3 S3 client: these calls and nothing else. A Protocol, as boto3 builds
    its client classes at run time (from `boto3.client("s3")` or Airflow's S3Hook), so there is none to name."""

    exceptions: Any  # the client's error classes: a read catches `exceptions.NoSuchKey`

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_paginator(self, operation_name: str) -> Any: ...  # "list_objects_v2": a listing, page by page


# Kept as they are: letters, digits, '-', '_', '.'. Everything else becomes ~HH per UTF-8 byte,
# which is reversible, and avoids '%', '/', spaces and non-ASCII that S3 tools mishandle.
_SAFE = re.compile(r"[A-Za-z0-9\-_.]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9\-][A-Za-z0-9\-_.]*")  # an id that is its own encoding
_ESCAPE = re.compile(r"~([0-9A-F]{2})")
# S3 keys may be 1024 bytes; leave room for the prefix and the day folder.
MAX_ENCODED_ID = 800
HASHED_MARK = "~~sha256-"
MANIFEST_FOLDER = "_manifests"
NDJSON_SUFFIX = ".ndjson.gz"
PARQUET_SUFFIX = parquet.SUFFIX


def encode_id(message_id: str) -> str:
    """A key-safe, reversible form of a message id (a hash for ids too long for a key)."""
    if not message_id:
        raise ValueError("message id must not be empty")
    if len(message_id) <= MAX_ENCODED_ID and _ALL_SAFE.fullmatch(message_id):
        return message_id  # most ids; the loop below costs ~10 us an id
    out = []
    for i, ch in enumerate(message_id):
        # A leading '.' is escaped so no key part is ever '.' or '..'; a leading '_' too, because Athena,
        # Hive, Spark and pyarrow skip files whose name starts with either, as hidden.
        if _SAFE.match(ch) and not (i == 0 and ch in "._"):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    encoded = "".join(out)
    if len(encoded) > MAX_ENCODED_ID:
        return HASHED_MARK + hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    return encoded


def decode_id(encoded: str) -> str:
    if encoded.startswith(HASHED_MARK):
        raise ValueError(f"{encoded!r} is the hash of a long id; read message_id from the object instead")
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(encoded):
        raw += encoded[pos:m.start()].encode("ascii")
        raw.append(int(m.group(1), 16))
        pos = m.end()
    raw += encoded[pos:].encode("ascii")
    return raw.decode("utf-8")


def day_prefix(prefix: str, day: date) -> str:
    return f"{prefix}/dt={day.isoformat()}/"


def day_uri(bucket: str, prefix: str, day: date) -> str:
    """The S3 URI of a day's folder: what downstream consumers (and Airflow Assets) name."""
    return f"s3://{bucket}/{day_prefix(prefix, day)}"


def object_key(prefix: str, day: date, message_id: str) -> str:
    return f"{day_prefix(prefix, day)}{encode_id(message_id)}.json"


def manifest_key(prefix: str, dag_id: str, run_id: str) -> str:
    return f"{prefix}/{MANIFEST_FOLDER}/{encode_id(dag_id)}/{encode_id(run_id)}.json"


def serialise(document: dict[str, Any]) -> bytes:
    """UTF-8 JSON (`jsonio`); TypeError/ValueError for content it cannot write (a lone surrogate). Documents
    come from search answers read by `jsonio`, so they hold no NaN or infinity (refused when read)."""
    return jsonio.encode(document)


@dataclass(frozen=True)
class Upload(Generic[T]):
    """An object to PUT, tagged with what the caller needs back with its result (for the pipeline: the
    message of a document, then the list of messages of an object; `bundle_ndjson` turns one into the other)."""

    key: str
    body: bytes
    tag: T
    content_type: str = "application/json"
    row: dict[str, Any] | None = None  # the parquet layout's row of the document, instead of `body`


def batch_key_prefix(prefix: str, day: date, job_id: int, batch_no: int | None = None) -> str:
    """Where the NDJSON files of a job (and one of its batches) for a day start."""
    head = f"{day_prefix(prefix, day)}batch-{job_id:010d}-"
    return head if batch_no is None else f"{head}{batch_no:05d}-"


def batch_object_key(prefix: str, day: date, job_id: int, batch_no: int, attempt: int,
                     suffix: str = NDJSON_SUFFIX) -> str:
    """Key of one attempt's NDJSON (or Parquet) file for one day.

    Never reused: a later attempt or rerun writes a new object and the old one is removed once no
    message refers to it, so a partial rerun can never overwrite documents it did not rewrite.
    """
    return f"{batch_key_prefix(prefix, day, job_id, batch_no)}a{attempt:03d}-{uuid.uuid4().hex[:8]}{suffix}"


def bundle_ndjson(uploads: list[Upload[T]], *, day_of: Callable[[T], date], prefix: str, job_id: int, batch_no: int,
                  attempt: int) -> list[Upload[list[T]]]:
    """One gzip NDJSON object per day instead of one object per message; tags become lists."""
    by_day: dict[date, list[Upload[T]]] = {}
    for u in uploads:
        by_day.setdefault(day_of(u.tag), []).append(u)
    return [
        Upload(batch_object_key(prefix, day, job_id, batch_no, attempt),
               gzip.compress(b"".join(u.body + b"\n" for u in group), compresslevel=5),
               tag=[u.tag for u in group], content_type="application/x-ndjson")
        for day, group in sorted(by_day.items())
    ]


def bundle_parquet(uploads: list[Upload[T]], *, day_of: Callable[[T], date], prefix: str, job_id: int,
                   batch_no: int, attempt: int) -> list[Upload[list[T]]]:
    """One Parquet file per day of the uploads' rows instead of one object per message; tags become lists."""
    by_day: dict[date, list[Upload[T]]] = {}
    for u in uploads:
        by_day.setdefault(day_of(u.tag), []).append(u)
    return [
        Upload(batch_object_key(prefix, day, job_id, batch_no, attempt, PARQUET_SUFFIX),
               parquet.write(u.row for u in group if u.row is not None),
               tag=[u.tag for u in group], content_type=parquet.CONTENT_TYPE)
        for day, group in sorted(by_day.items())
    ]


def is_bundle(key: str) -> bool:
    """Whether the object at `key` holds the documents of many messages (an NDJSON or Parquet file)."""
    return key.endswith((NDJSON_SUFFIX, PARQUET_SUFFIX))


@dataclass(frozen=True)
class UploadResult(Generic[T]):
    upload: Upload[T]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def encryption(sse_kms_key_id: str | None) -> dict[str, str]:
    """The PUT arguments for SSE-KMS with that key; none without a key (the bucket's default applies)."""
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse_kms_key_id} if sse_kms_key_id else {}


def upload_all(s3: S3Client, bucket: str, uploads: list[Upload[T]], concurrency: int, *,
               sse_kms_key_id: str | None = None) -> Iterator[UploadResult[T]]:
    """PUT every object with at most `concurrency` requests in flight; one result per upload.

    Retries with backoff are the S3 client's (botocore retry config); an upload still failing after
    them comes back with its error instead of stopping the others. With `sse_kms_key_id` every
    object is encrypted with that KMS key (SSE-KMS).
    """
    def put(upload: Upload[T]) -> UploadResult[T]:
        try:
            extra = {"ContentEncoding": "gzip"} if upload.key.endswith(".gz") else {}
            extra.update(encryption(sse_kms_key_id))
            s3.put_object(Bucket=bucket, Key=upload.key, Body=upload.body, ContentType=upload.content_type, **extra)
            return UploadResult(upload, None)
        except Exception as exc:  # noqa: BLE001 - reported per object, the batch goes on
            return UploadResult(upload, f"S3 upload of {upload.key!r} failed: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-put") as pool:
        yield from pool.map(put, uploads)


DATA_SUFFIXES = (".json", NDJSON_SUFFIX, PARQUET_SUFFIX)


def data_keys(s3: S3Client, bucket: str, prefix: str) -> Iterator[str]:
    """The keys of the data objects (`.json`, `.ndjson.gz` or `.parquet`) under `prefix`, page by page."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from (obj["Key"] for obj in page.get("Contents", []) if obj["Key"].endswith(DATA_SUFFIXES))


def count_objects(s3: S3Client, bucket: str, prefix: str) -> int:
    """Number of data objects under `prefix`."""
    return sum(1 for _ in data_keys(s3, bucket, prefix))


def _read(s3: S3Client, bucket: str, key: str) -> bytes | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return gzip.decompress(body) if key.endswith(".gz") else body


def document_ids(s3: S3Client, bucket: str, key: str) -> list[str]:
    """The message ids of the documents an object holds, in order (empty when it does not exist)."""
    body = _read(s3, bucket, key)
    if body is None:
        return []
    if key.endswith(PARQUET_SUFFIX):
        return parquet.message_ids(body)
    return jsonio.message_ids(line for line in body.splitlines() if line.strip())


def remove_documents(s3: S3Client, bucket: str, key: str, removable: Callable[[list[str]], set[str]], *,
                     sse_kms_key_id: str | None = None) -> list[str]:
    """Remove from an object the documents whose message ids `removable` returns; delete it when none is left.

    `removable` gets the ids of the object's documents (one for a per-message object). Returns the
    ids of the documents left (empty when the object is gone or was never there). The caller holds
    the object's lock. A rewritten object is encrypted as new ones are (`sse_kms_key_id`), since a
    PUT does not keep the old object's key.
    """
    body = _read(s3, bucket, key)
    if body is None:
        return []
    if key.endswith(PARQUET_SUFFIX):
        return _remove_rows(s3, bucket, key, body, removable, sse_kms_key_id)
    lines = [line for line in body.splitlines() if line.strip()]
    ids = jsonio.message_ids(lines)
    remove = removable(ids) if ids else set()
    kept = [(line, message_id) for line, message_id in zip(lines, ids, strict=True) if message_id not in remove]
    if len(kept) == len(lines):
        return ids
    if not kept:
        s3.delete_object(Bucket=bucket, Key=key)
    elif key.endswith(NDJSON_SUFFIX):
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"".join(line + b"\n" for line, _ in kept), 5),
                      ContentType="application/x-ndjson", ContentEncoding="gzip", **encryption(sse_kms_key_id))
    return [message_id for _, message_id in kept]


def _remove_rows(s3: S3Client, bucket: str, key: str, body: bytes, removable: Callable[[list[str]], set[str]],
                sse_kms_key_id: str | None) -> list[str]:
    """`remove_documents` of a Parquet file."""
    ids = parquet.message_ids(body)
    remove = removable(ids) if ids else set()
    kept = [message_id for message_id in ids if message_id not in remove]
    if len(kept) == len(ids):
        return ids
    if not kept:
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=parquet.without(body, remove), ContentType=parquet.CONTENT_TYPE,
                      **encryption(sse_kms_key_id))
    return kept


def put_json(s3: S3Client, bucket: str, key: str, document: dict[str, Any], *,
             sse_kms_key_id: str | None = None) -> None:
    body = json.dumps(document, ensure_ascii=False, indent=2, default=str).encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **encryption(sse_kms_key_id))
