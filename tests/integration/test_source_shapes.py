"""Source data in the shapes real clusters have, on the real node: date_nanos timestamps, related
documents naming their message by number, by array (one document, several messages) or by a dotted
path, and related indices whose message_id was mapped dynamically (text + .keyword)."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

import support
from es_export import pipeline, search, source
from es_export.config import ExportConfig, RunParams
from es_export.errors import SourceError
from shard_loss import ShardLossProxy

pytestmark = pytest.mark.integration

DB = "tracking_test_shapes"
IDS = ["100", "101", "Msg/A b", "msg:ü"]


@pytest.fixture()
def cfg(es, s3):
    suffix = uuid.uuid4().hex[:8]
    cfg = ExportConfig(messages_index=f"sh-messages-{suffix}", history_index=f"sh-history-{suffix}",
                       status_index=f"sh-status-{suffix}", audit_index=f"sh-audit-{suffix}",
                       bucket=f"shapes-{suffix}")
    es.indices.create(index=cfg.messages_index, mappings={"properties": {"timestamp": {"type": "date_nanos"}}})
    es.indices.create(index=cfg.audit_index, mappings={"properties": {"message_id": {"type": "long"}}})
    for i, mid in enumerate(IDS):
        es.index(index=cfg.messages_index, id=mid, document={"timestamp": f"2025-07-01T10:00:00.12345678{i}Z"})
    # history is mapped dynamically: message_id becomes text with a .keyword sub-field.
    es.index(index=cfg.history_index, document={"message_id": ["Msg/A b", "msg:ü"], "event": "both"})
    es.index(index=cfg.history_index, document={"message_id": "Msg/A b", "event": "one"})
    es.index(index=cfg.status_index, document={"message_id": "101", "status": "sent"})
    es.index(index=cfg.audit_index, document={"message_id": 100, "action": "read"})
    es.indices.refresh(index=",".join([cfg.messages_index, cfg.history_index, cfg.status_index, cfg.audit_index]))
    s3.create_bucket(Bucket=cfg.bucket)
    yield cfg
    es.indices.delete(index=",".join([cfg.messages_index, cfg.history_index, cfg.status_index, cfg.audit_index]))


def test_a_day_of_date_nanos_messages_and_awkward_related_documents_exports_exactly(es, s3, cfg):
    support.reset_database(DB)
    conn = support.connect(DB)
    start = datetime(2025, 7, 1, tzinfo=UTC)
    params = RunParams(start=start, end=datetime(2025, 7, 2, tzinfo=UTC))
    job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex[:6]}", params=params)
    assert pipeline.extract(es, conn, cfg, job).ids_found == len(IDS)
    (batch,) = pipeline.plan(conn, cfg, job, params)
    assert pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id).completed == len(IDS)
    assert pipeline.reconcile(es, conn, s3, cfg, job).status == "completed"
    details = source.fetch_details(es, cfg, IDS)
    assert [d["event"] for d in details["Msg/A b"].related["history"]] == ["both", "one"]
    assert [d["event"] for d in details["msg:ü"].related["history"]] == ["both"]
    assert details["101"].related["status"] == [{"message_id": "101", "status": "sent"}]
    assert details["100"].related["audit"] == [{"message_id": 100, "action": "read"}]
    assert details["101"].related["history"] == [] and details["100"].related["status"] == []
    conn.close()


def test_a_dotted_message_id_field_links_nested_documents(es, cfg):
    dotted = replace(cfg, message_id_field="meta.message_id")
    es.index(index=cfg.status_index, document={"meta": {"message_id": "Msg/A b"}, "status": "nested"},
             refresh=True)
    details = source.fetch_details(es, dotted, ["Msg/A b"])
    assert details["Msg/A b"].related["status"] == [{"meta": {"message_id": "Msg/A b"}, "status": "nested"}]


def test_a_text_message_id_without_keyword_is_refused_naming_index_and_field(es, cfg):
    index = f"sh-text-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=index, mappings={"properties": {"message_id": {"type": "text"}}})
    try:
        with pytest.raises(SourceError, match=f"field 'message_id' of index '{index}' is mapped as 'text' without"):
            source.fetch_details(es, replace(cfg, history_index=index), IDS)
    finally:
        es.indices.delete(index=index)


def test_daily_indices_read_through_a_pattern_fetch_each_message_from_its_own_index(es, s3, cfg):
    """messages-YYYY.MM.DD read as `messages-*`: each message is read from its own index, which the extract keeps."""
    base = f"sh-daily-{uuid.uuid4().hex[:6]}"
    for day, ids in (("2025.07.01", ["d1-a", "d1-b"]), ("2025.07.02", ["d2-a"])):
        for mid in ids:
            es.index(index=f"{base}-{day}", id=mid, document={"timestamp": f"{day.replace('.', '-')}T23:00:00Z"})
    es.indices.refresh(index=f"{base}-*")
    daily = replace(cfg, messages_index=f"{base}-*")
    support.reset_database(DB)
    conn = support.connect(DB)
    try:
        params = RunParams(start=datetime(2025, 7, 1, tzinfo=UTC), end=datetime(2025, 7, 3, tzinfo=UTC))
        job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex[:6]}", params=params)
        assert pipeline.extract(es, conn, daily, job).ids_found == 3
        assert sorted(support.query(DB, "SELECT message_id, source_index FROM message_tracking")) == [
            ("d1-a", f"{base}-2025.07.01"), ("d1-b", f"{base}-2025.07.01"), ("d2-a", f"{base}-2025.07.02")]
        (batch,) = pipeline.plan(conn, daily, job, params)
        result = pipeline.process_batch(es, conn, s3, daily, batch, run_id=job.run_id)
        assert (result.completed, result.failed) == (3, 0)
        assert pipeline.reconcile(es, conn, s3, daily, job).status == "completed"
    finally:
        conn.close()
        es.indices.delete(index=f"{base}-*")


def test_details_read_each_concrete_index_with_one_msearch_routed_and_gone_indices_included(es, cfg):
    """The messages of a batch are read by an `ids` search per concrete index inside the batch's one
    `_msearch` (no `_mget`): a document indexed with a custom routing is found without it, and the
    messages of an index deleted since the extract come back as not found while the rest are read."""
    base = f"sh-ids-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=f"{base}-a", settings={"number_of_shards": 3, "number_of_replicas": 0})
    for mid in ("a-1", "a-2 "):
        es.index(index=f"{base}-a", id=mid, document={"timestamp": "2025-07-01T10:00:00Z", "n": mid})
    es.index(index=f"{base}-a", id="a-routed", routing="tenant-7", document={"timestamp": "2025-07-01T11:00:00Z"})
    es.index(index=f"{base}-b", id="b-1", document={"timestamp": "2025-07-01T12:00:00Z"})
    es.indices.refresh(index=f"{base}-*")
    indices = {"a-1": f"{base}-a", "a-2 ": f"{base}-a", "a-routed": f"{base}-a", "b-1": f"{base}-b",
               "gone-1": f"{base}-deleted-by-retention", "100": cfg.messages_index}
    try:
        with ShardLossProxy(support.require_env("ES_URL")) as proxy:
            client = search.connect(search.SearchSettings(url=proxy.url))
            before = len(proxy.requests)
            details = source.fetch_details(client, cfg, list(indices), indices)
            paths = [target.split("?")[0].rsplit("/", 1)[-1] for _, target in proxy.requests[before:]]
    finally:
        es.indices.delete(index=f"{base}-*")
    assert paths.count("_msearch") == 1 and "_mget" not in paths, paths
    assert {mid: d.message is not None for mid, d in details.items()} == {
        "a-1": True, "a-2 ": True, "a-routed": True, "b-1": True, "gone-1": False, "100": True}
    assert details["a-2 "].message == {"timestamp": "2025-07-01T10:00:00Z", "n": "a-2 "}
    assert details["100"].related["audit"] == [{"message_id": 100, "action": "read"}]


def test_one_id_twice_in_an_index_and_a_closed_index_are_refused_by_name(es, cfg):
    """The same id indexed with two routings lands on two shards of one index: refused, not one copy picked
    (and no other message pushed out of the search's window). A closed index fails the batch as a
    SourceError that says to open it, not as a retry that would meet it again."""
    base = f"sh-twice-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=f"{base}-a", settings={"number_of_shards": 4, "number_of_replicas": 0})
    routings = ["r-0", "r-1", "r-2", "r-3", "r-4", "r-5"]
    shards = {es.search_shards(index=f"{base}-a", routing=r)["shards"][0][0]["shard"]: r for r in routings}
    assert len(shards) >= 2, "the routings all map to one shard"
    first, second = list(shards.values())[:2]
    for routing in (first, second):
        es.index(index=f"{base}-a", id="twice", routing=routing, document={"timestamp": "2025-07-01T10:00:00Z"})
    es.index(index=f"{base}-a", id="once", document={"timestamp": "2025-07-01T10:00:00Z"})
    es.index(index=f"{base}-b", id="closed-1", document={"timestamp": "2025-07-01T10:00:00Z"})
    es.indices.refresh(index=f"{base}-*")
    try:
        with pytest.raises(SourceError, match=r"holds 3 documents for the 2 message ids .* two routings"):
            source.fetch_details(es, cfg, ["twice", "once"], {"twice": f"{base}-a", "once": f"{base}-a"})
        with pytest.raises(SourceError, match=r"holds 2 documents for the 1 message ids .*e\.g\. \['twice'\]"):
            source.fetch_details(es, cfg, ["twice"], {"twice": f"{base}-a"})
        es.indices.close(index=f"{base}-b")
        with pytest.raises(SourceError, match=r"HTTP 400.*index is closed: open it"):
            source.fetch_details(es, cfg, ["closed-1"], {"closed-1": f"{base}-b"})
    finally:
        es.indices.delete(index=f"{base}-*", expand_wildcards="all")
