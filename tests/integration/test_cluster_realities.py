"""What real clusters do to the extract, on the stack's real Elasticsearch node: a shard lost before or
during the scan, an index behind the alias that does not map the timestamp, `date` and `date_nanos`
behind one name, one id in two indices, a day whose messages share one timestamp, and a timestamp
with several values. Each ends in a complete extract or in an error that names what is wrong, never
in a green run with fewer messages than the day has."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import urllib3

import support
from es_export import pipeline, search, source, tracking
from es_export.config import ExportConfig, RunParams
from es_export.errors import PartialResults, SourceError
from shard_loss import ShardLossProxy

pytestmark = pytest.mark.integration

DB = "tracking_test_realities"
START = datetime(2025, 9, 1, tzinfo=UTC)
PARAMS = RunParams(start=START, end=START + timedelta(days=1))


def http(method: str, path: str, body=None, ndjson: bool = False) -> dict:
    url = support.require_env("ES_URL")
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    resp = urllib3.PoolManager().request(method, url + path, body=data, headers={
        "Content-Type": "application/x-ndjson" if ndjson else "application/json"})
    assert resp.status < 300, f"{method} {path}: {resp.status} {resp.data[:500]!r}"
    return json.loads(resp.data or b"{}")


def make_index(name: str, timestamp_type: str | None = "date", shards: int = 1) -> None:
    mappings = {"properties": {"timestamp": {"type": timestamp_type}}} if timestamp_type else {}
    http("PUT", f"/{name}", {"settings": {"number_of_shards": shards, "number_of_replicas": 0},
                             "mappings": mappings})


def load(index: str, docs: dict[str, dict]) -> None:
    lines = b"".join(json.dumps({"index": {"_index": index, "_id": i}}).encode() + b"\n"
                     + json.dumps(d).encode() + b"\n" for i, d in docs.items())
    answer = http("POST", "/_bulk?refresh=true", lines, ndjson=True)
    assert not answer["errors"], json.dumps(answer)[:1000]


def stamped(prefix: str, n: int, *, hour_step: float = 0.5, nanos: bool = False) -> dict[str, dict]:
    out = {}
    for i in range(n):
        ts = START + timedelta(hours=hour_step * i, milliseconds=i)
        text = ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + ("123456Z" if nanos else "Z")
        out[f"{prefix}{i:03d}"] = {"timestamp": text}
    return out


@pytest.fixture()
def names(es):
    """A fresh name prefix; every index and alias under it is deleted afterwards."""
    prefix = f"real-{uuid.uuid4().hex[:8]}"
    yield prefix
    es.indices.delete(index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True)


@pytest.fixture()
def conn():
    c = support.new_tracking_database(DB)
    yield c
    c.close()


def config(messages: str, **kw) -> ExportConfig:
    return ExportConfig(messages_index=messages, history_index=messages, status_index=messages,
                        audit_index=messages, bucket="unused", **kw)


def extract(client, conn, cfg, run_id: str | None = None):
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=run_id or uuid.uuid4().hex[:8], params=PARAMS)
    return job, pipeline.extract(client, conn, cfg, job)


def alias_over_two(names: str, n: int = 20) -> str:
    for part in ("a", "b"):
        make_index(f"{names}-{part}")
        load(f"{names}-{part}", stamped(f"{part}-", n))
    http("POST", "/_aliases", {"actions": [{"add": {"index": f"{names}-a", "alias": f"{names}-all"}},
                                           {"add": {"index": f"{names}-b", "alias": f"{names}-all"}}]})
    return f"{names}-all"


# ---------------------------------------------------------------------------- 1. partial results


@pytest.mark.parametrize("lose_after", [None, 2], ids=["lost-before-the-scan", "lost-during-the-scan"])
def test_a_lost_shard_fails_the_extract_and_finishes_no_slice(es, conn, names, lose_after):
    alias = alias_over_two(names)
    with ShardLossProxy(support.require_env("ES_URL")) as proxy:
        client = search.connect(search.SearchSettings(url=proxy.url))
        if lose_after is None:
            proxy.lost = {f"{names}-b"}
        else:
            proxy.pending, proxy.lose_after_searches = {f"{names}-b"}, lose_after
        cfg = config(alias, scan_page_size=5)
        with pytest.raises(PartialResults, match=f"{names}-b"):
            extract(client, conn, cfg)
        assert all("allow_partial_search_results=false" in target for method, target in proxy.requests
                   if target.split("?")[0].endswith(("/_search", "/_pit")))
    checkpoints = support.query(DB, "SELECT finished FROM extract_checkpoints")
    assert checkpoints and not any(finished for (finished,) in checkpoints)


def test_a_count_of_part_of_the_shards_is_refused(es, names):
    alias = alias_over_two(names)
    with ShardLossProxy(support.require_env("ES_URL")) as proxy:
        client = search.connect(search.SearchSettings(url=proxy.url))
        assert source.count_interval(client, config(alias), PARAMS.start, PARAMS.end) == 40
        proxy.lost = {f"{names}-b"}
        with pytest.raises(PartialResults, match="1 of .* shard\\(s\\) failed"):
            source.count_interval(client, config(alias), PARAMS.start, PARAMS.end)


def test_details_from_a_lost_shard_fail_the_batch_not_its_messages(es, conn, names):
    alias = alias_over_two(names, n=4)
    with ShardLossProxy(support.require_env("ES_URL")) as proxy:
        client = search.connect(search.SearchSettings(url=proxy.url))
        ids = [f"a-{i:03d}" for i in range(4)] + [f"b-{i:03d}" for i in range(4)]
        proxy.lost = {f"{names}-b"}
        with pytest.raises(PartialResults):  # the messages' `ids` search, and the related searches
            source.fetch_details(client, config(alias), ids, {i: f"{names}-{i[0]}" for i in ids})
        with pytest.raises(PartialResults):
            pipeline.fetch_isolating(client, config(alias), ids, {i: f"{names}-{i[0]}" for i in ids})


# ---------------------------------------------------------------------------- 2. an index without the field


def test_an_index_behind_the_alias_without_the_timestamp_is_named(es, conn, names):
    make_index(f"{names}-a")
    load(f"{names}-a", stamped("a-", 10))
    make_index(f"{names}-b", timestamp_type=None)
    load(f"{names}-b", {f"b-{i}": {"@timestamp": "2025-09-01T10:00:00Z"} for i in range(10)})
    make_index(f"{names}-c", timestamp_type=None)  # empty: nothing to lose there
    with pytest.raises(SourceError, match=f"\\['{names}-b'\\] behind '{names}-\\*' hold documents but do not map"):
        extract(es, conn, config(f"{names}-*"))
    es.indices.delete(index=f"{names}-b")
    assert extract(es, conn, config(f"{names}-*"))[1].ids_found == 10


def test_a_closed_index_behind_the_pattern_is_named_not_skipped(es, conn, names):
    for part in ("a", "b"):
        make_index(f"{names}-{part}")
        load(f"{names}-{part}", stamped(f"{part}-", 5))
    es.indices.close(index=f"{names}-b")
    with pytest.raises(SourceError, match=f"\\['{names}-b'\\] behind '{names}-\\*' are closed"):
        extract(es, conn, config(f"{names}-*"))
    assert extract(es, conn, config(f"{names}-*,-{names}-b"))[1].ids_found == 5  # left out, as the error says


# ---------------------------------------------------------------------------- 3. date and date_nanos


def test_date_and_date_nanos_behind_one_alias_are_paged_in_order(es, conn, names):
    make_index(f"{names}-ms", "date")
    make_index(f"{names}-ns", "date_nanos")
    load(f"{names}-ms", stamped("ms-", 30, hour_step=0.7))
    load(f"{names}-ns", stamped("ns-", 30, hour_step=0.75, nanos=True))
    http("POST", "/_aliases", {"actions": [{"add": {"index": f"{names}-ms", "alias": f"{names}-all"}},
                                           {"add": {"index": f"{names}-ns", "alias": f"{names}-all"}}]})
    job, result = extract(es, conn, config(f"{names}-all", scan_page_size=10))
    assert result.ids_found == 60
    tracked = dict(support.query(DB, "SELECT message_id, message_ts FROM message_tracking"))
    assert len(tracked) == 60
    assert tracked["ns-002"] == datetime(2025, 9, 1, 1, 30, 0, 2000)  # at its own time, to the millisecond
    assert tracked["ms-010"] == datetime(2025, 9, 1, 7, 0, 0, 10000)


# ---------------------------------------------------------------------------- 4. one id in two indices


def test_one_id_in_two_indices_is_refused_naming_both(es, conn, names):
    make_index(f"{names}-v1")
    make_index(f"{names}-v2")
    load(f"{names}-v1", stamped("m-", 10))
    load(f"{names}-v2", {"m-003": stamped("m-", 10)["m-003"], "m-100": {"timestamp": "2025-09-01T23:00:00Z"}})
    with pytest.raises(SourceError, match=f"'m-003' in '{names}-v[12]' and '{names}-v[12]'"):
        extract(es, conn, config(f"{names}-v*", insert_chunk_size=3))
    # Reindexed: the old index is gone, and the id is followed to the new one.
    es.indices.delete(index=f"{names}-v1")
    load(f"{names}-v2", stamped("m-", 10))
    assert extract(es, conn, config(f"{names}-v*"))[1].ids_found == 11
    assert support.query(DB, "SELECT DISTINCT source_index FROM message_tracking") == ((f"{names}-v2",),)


# ---------------------------------------------------------------------------- 5. one timestamp for many ids


class Crash(BaseException):
    """The worker is killed mid-extract (no except clause of the package runs)."""


def crash_after(monkeypatch, ids: int) -> list[str]:
    """Kill the first extract once it has streamed `ids` ids; returns every id streamed, resumes included."""
    read: list[str] = []
    stream = source.stream_ids

    def counted(*args, **kwargs):
        for hit in stream(*args, **kwargs):
            read.append(hit.message_id)
            if len(read) == ids:
                raise Crash()
            yield hit

    monkeypatch.setattr(source, "stream_ids", counted)
    return read


def test_a_resume_inside_a_group_of_equal_timestamps_does_not_read_it_again(es, conn, names, monkeypatch):
    index = f"{names}-same"
    make_index(index, shards=2)
    total = 50_000
    for start in range(0, total, 10_000):
        load(index, {f"s-{i:06d}": {"timestamp": "2025-09-01T08:00:00Z"} for i in range(start, start + 10_000)})
    cfg = config(index, scan_page_size=1000, insert_chunk_size=1000)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="same-ts", params=PARAMS)
    read = crash_after(monkeypatch, 20_000)
    with pytest.raises(Crash):
        pipeline.extract(es, conn, cfg, job)
    conn.rollback()
    first = len(read)
    result = pipeline.extract(es, conn, cfg, job)
    again = len(read) - first
    assert result.resumed and result.ids_found == total
    assert again < total, f"the resumed extract read {again} ids of a {total}-id group again"
    assert support.query(DB, "SELECT COUNT(*) FROM message_tracking") == ((total,),)


def test_a_group_is_read_again_when_its_point_in_time_is_gone(es, conn, names, monkeypatch):
    index = f"{names}-same"
    make_index(index)
    load(index, {f"s-{i:04d}": {"timestamp": "2025-09-01T08:00:00Z"} for i in range(300)})
    cfg = config(index, scan_page_size=50, insert_chunk_size=50)
    job = pipeline.open_job(conn, dag_id="es_message_export", run_id="pit-gone", params=PARAMS)
    crash_after(monkeypatch, 120)
    with pytest.raises(Crash):
        pipeline.extract(es, conn, cfg, job)
    conn.rollback()
    monkeypatch.undo()
    saved = tracking.load_checkpoint(conn, job.job_id)
    assert saved.pit_id and saved.at_last == 100
    es.close_point_in_time(id=saved.pit_id)  # expired meanwhile
    result = pipeline.extract(es, conn, cfg, job)
    assert result.ids_found == 300 and result.reopened == 1


# ---------------------------------------------------------------------------- 6. several timestamps


def test_a_timestamp_with_several_values_is_refused_naming_the_message(es, conn, names):
    make_index(f"{names}-mv")
    load(f"{names}-mv", {**stamped("m-", 5),
                         "two-days": {"timestamp": ["2025-08-31T23:00:00Z", "2025-09-01T10:00:00Z"]}})
    with pytest.raises(SourceError, match="message 'two-days' .* has several values in 'timestamp'"):
        extract(es, conn, config(f"{names}-mv"))
