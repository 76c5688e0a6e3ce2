import json
from datetime import date

import pytest

from es_export import sink

pytestmark = pytest.mark.unit

AWKWARD = ["plain-id_1.2", "tenant/a/b", "with space", "..", "../etc/passwd", ".hidden", "ümlaut-消息",
           "100%+&=?#", "back\\slash", "tilde~7E", "emoji 🚀", "_auto-generated-id", "__", "_.x"]


@pytest.mark.parametrize("message_id", AWKWARD)
def test_encoding_is_reversible_and_key_safe(message_id):
    encoded = sink.encode_id(message_id)
    assert sink.decode_id(encoded) == message_id
    assert all(c.isascii() and (c.isalnum() or c in "-_.~") for c in encoded)
    assert not encoded.startswith((".", "_"))


def test_no_engine_takes_a_messages_object_for_a_hidden_file(tmp_path):
    """Athena, Hive, Spark and pyarrow skip files whose name starts with '_' or '.': an Elasticsearch
    auto-generated id starts with '_' about once in 64. pyarrow's dataset reader must list every object."""
    import pyarrow.dataset as ds

    ids = ["_aBcD1234", ".dot", "plain", "__"]
    for mid in ids:
        path = tmp_path / sink.object_key("messages", date(2024, 10, 1), mid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"message_id": "x"}\n')
    found = ds.dataset(str(tmp_path / "messages"), format="json", partitioning="hive").files
    assert sorted(sink.decode_id(f.rsplit("/", 1)[1].removesuffix(".json")) for f in found) == sorted(ids)


def test_plain_ids_stay_readable():
    assert sink.encode_id("msg-42-00000001") == "msg-42-00000001"


def test_key_is_a_pure_function_of_day_and_id():
    key = sink.object_key("messages", date(2024, 10, 1), "tenant/x y")
    assert key == "messages/dt=2024-10-01/tenant~2Fx~20y.json"
    assert key == sink.object_key("messages", date(2024, 10, 1), "tenant/x y")


def test_plain_ids_up_to_the_limit_stay_as_they_are_and_longer_ones_are_hashed():
    assert sink.encode_id("a" * sink.MAX_ENCODED_ID) == "a" * sink.MAX_ENCODED_ID
    assert sink.encode_id("a" * (sink.MAX_ENCODED_ID + 1)).startswith(sink.HASHED_MARK)
    assert sink.encode_id(".a" + "a" * (sink.MAX_ENCODED_ID - 2)).startswith(sink.HASHED_MARK)  # ~2E makes it 802


def test_very_long_ids_get_a_stable_hash():
    long_id = "x/" * 500
    assert sink.encode_id(long_id) == sink.encode_id(long_id)
    assert sink.encode_id(long_id).startswith(sink.HASHED_MARK)
    with pytest.raises(ValueError, match="hash of a long id"):
        sink.decode_id(sink.encode_id(long_id))


def test_serialise_keeps_unicode_and_refuses_what_json_cannot_hold():
    assert sink.serialise({"t": "Grüße 🚀"}) == '{"t":"Grüße 🚀"}'.encode()
    with pytest.raises(TypeError):
        sink.serialise({"x": object()})
    with pytest.raises(ValueError):
        sink.serialise({"x": "\ud800"})  # a lone surrogate (JSON's "\ud800" escape) has no UTF-8


class FlakyS3:
    def __init__(self, bad_keys):
        self.bad_keys, self.puts = set(bad_keys), {}

    def put_object(self, Bucket, Key, Body, ContentType):  # noqa: N803 - boto3's names
        if Key in self.bad_keys:
            raise ConnectionError("boom")
        self.puts[Key] = Body


def test_upload_all_reports_each_failure_and_finishes_the_rest():
    s3 = FlakyS3({"k3"})
    uploads = [sink.Upload(f"k{i}", b"{}", tag=None) for i in range(6)]
    results = list(sink.upload_all(s3, "b", uploads, concurrency=3))
    assert [r.upload.key for r in results] == [u.key for u in uploads]
    assert [r.key for r in [r.upload for r in results if not r.ok]] == ["k3"]
    assert "k3" in results[3].error and "ConnectionError: boom" in results[3].error
    assert set(s3.puts) == {"k0", "k1", "k2", "k4", "k5"}


def test_ndjson_bundles_one_gzip_object_per_day():
    import gzip

    uploads = [sink.Upload(f"k{i}", json.dumps({"n": i}).encode(), tag=(date(2024, 10, 1 + i % 2), i))
               for i in range(5)]
    bundles = sink.bundle_ndjson(uploads, day_of=lambda t: t[0], prefix="p", job_id=7, batch_no=3, attempt=2)
    assert [b.key[:44] for b in bundles] == ["p/dt=2024-10-01/batch-0000000007-00003-a002-",
                                            "p/dt=2024-10-02/batch-0000000007-00003-a002-"]
    assert all(b.key.endswith(".ndjson.gz") for b in bundles)
    # Never the same name twice: a later attempt cannot overwrite documents it does not rewrite.
    again = sink.bundle_ndjson(uploads, day_of=lambda t: t[0], prefix="p", job_id=7, batch_no=3, attempt=2)
    assert {b.key for b in bundles}.isdisjoint(b.key for b in again)
    assert [json.loads(x)["n"] for x in gzip.decompress(bundles[0].body).splitlines()] == [0, 2, 4]
    assert [t[1] for t in bundles[1].tag] == [1, 3]


@pytest.mark.parametrize("docs", [
    pytest.param([{"timestamp": "2", "v": 1}, {"timestamp": "1", "v": 2}], id="distinct-times"),
    pytest.param([{"timestamp": "1", "v": "b"}, {"timestamp": "1", "v": "a"}, {"timestamp": "0", "v": "c"}],
                 id="tie"),
])
def test_related_documents_sort_the_same_whatever_their_order(docs):
    from es_export.source import _sort_by_time

    a, b = list(docs), list(reversed(docs))
    _sort_by_time(a, "timestamp")
    _sort_by_time(b, "timestamp")
    assert a == b and [d["timestamp"] for d in a] == sorted(d["timestamp"] for d in docs)


class RecordingS3:
    """Records every PUT's arguments; holds objects so remove_documents can read and rewrite them."""

    class exceptions:  # noqa: N801 - boto3's name
        NoSuchKey = KeyError

    def __init__(self, objects=None):
        self.objects, self.puts = dict(objects or {}), {}

    def put_object(self, *, Bucket, Key, Body, **kwargs):  # noqa: N803 - boto3's names
        self.objects[Key], self.puts[Key] = Body, kwargs

    def get_object(self, *, Bucket, Key):  # noqa: N803
        import io

        return {"Body": io.BytesIO(self.objects[Key])}


KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SSE_KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}


@pytest.mark.parametrize(("key_id", "headers"), [pytest.param(KMS_KEY, SSE_KMS, id="sse-kms"),
                                                 pytest.param(None, {}, id="bucket-default")])
def test_every_put_carries_the_kms_key_or_no_encryption_header(key_id, headers):
    import gzip

    lines = [json.dumps({"message_id": m}).encode() for m in ("a", "b")]
    ndjson = "p/dt=2024-10-01/batch-1.ndjson.gz"
    s3 = RecordingS3({ndjson: gzip.compress(b"\n".join(lines))})
    uploads = [sink.Upload("p/dt=2024-10-01/m.json", b"{}", tag=None),
               sink.Upload("p/dt=2024-10-01/b.ndjson.gz", b"", tag=None, content_type="application/x-ndjson")]
    assert all(r.ok for r in sink.upload_all(s3, "b", uploads, concurrency=2, sse_kms_key_id=key_id))
    # the rewrite of an NDJSON file
    assert sink.remove_documents(s3, "b", ndjson, lambda ids: {"b"}, sse_kms_key_id=key_id) == ["a"]
    sink.put_json(s3, "b", "p/_manifests/d/r.json", {"status": "completed"}, sse_kms_key_id=key_id)
    assert s3.puts == {
        "p/dt=2024-10-01/m.json": {"ContentType": "application/json", **headers},
        "p/dt=2024-10-01/b.ndjson.gz": {"ContentType": "application/x-ndjson", "ContentEncoding": "gzip", **headers},
        ndjson: {"ContentType": "application/x-ndjson", "ContentEncoding": "gzip", **headers},
        "p/_manifests/d/r.json": {"ContentType": "application/json", **headers},
    }


def test_remove_documents_removes_only_what_removable_names():
    import gzip

    ndjson = "p/dt=2024-10-01/batch-1.ndjson.gz"
    lines = [json.dumps({"message_id": m}).encode() for m in ("a", "b", "c")]
    s3 = RecordingS3({ndjson: gzip.compress(b"\n".join(lines))})
    asked = []

    def removable(ids):
        asked.append(list(ids))
        return {"b", "x"}

    assert sink.remove_documents(s3, "b", ndjson, removable) == ["a", "c"]
    assert asked == [["a", "b", "c"]]
    assert sink.document_ids(s3, "b", ndjson) == ["a", "c"]
    assert sink.remove_documents(s3, "b", ndjson, lambda ids: set()) == ["a", "c"]
    assert list(s3.puts) == [ndjson]  # nothing to remove: not rewritten again
